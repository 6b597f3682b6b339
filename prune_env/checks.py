"""Checked options: the one place a value is accepted or refused, for the command line and the
library alike.

Each check is a callable taking either the command line's text or a Python value; it returns
the value (parsed from text) or raises `CheckError` saying what it accepts. argparse uses the
checks as ``add_argument(type=...)`` (a bad number: its message, exit code 2, before anything is
loaded or created); the configs (`prune_env.config`) declare their fields with `option` and
run the same checks when they are made (`Options.__post_init__`), so a config built in Python
or read from a run's args.json is checked exactly as the command line is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

Check = Callable[[Any], Any]


def read_json(path: Path, what: str, fix: str = "") -> Any:
    """The JSON value in the file ``path`` (JSON, never pickle: no file the project reads can
    run code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: "PATH is not WHAT (the parser's reason)", then ``fix`` (what to do), when
            the file is not JSON text.
    """
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not {what} ({err})" + (f"; {fix}" if fix else "")) \
            from None


class CheckError(argparse.ArgumentTypeError, ValueError):
    """A value an option does not accept (argparse prints its message; callers catch it as a
    ValueError)."""


def _number(value: Any, kind: type) -> float:
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise CheckError(f"expected {'an integer' if kind is int else 'a number'}, "
                             f"got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        raise CheckError(f"expected {'an integer' if kind is int else 'a number'}, "
                         f"got {value!r}")
    if not math.isfinite(value):
        raise CheckError(f"expected a finite number, got {value!r}")
    return value


def integer(low: int, high: int | None = None) -> Check:
    """An integer in [low, high]."""

    def parse(value: Any) -> int:
        number = int(_number(value, int))
        if number < low or (high is not None and number > high):
            raise CheckError(
                f"expected an integer {'>= ' + str(low) if high is None else f'in [{low}, {high}]'}"
                f", got {value}")
        return number

    parse.__name__ = "integer"  # what argparse names in its message
    return parse


def real(low: float, high: float | None = None, *, open_low: bool = False) -> Check:
    """A finite number in [low, high] (or (low, high] with ``open_low``)."""

    def parse(value: Any) -> float:
        number = float(_number(value, float))
        if number < low or (open_low and number == low) or (high is not None and number > high):
            bracket = "(" if open_low else "["
            span = f"{bracket}{low}, {high}]" if high is not None else None
            wanted = (f"in {span}" if span else f"{'>' if open_low else '>='} {low}")
            raise CheckError(f"expected a number {wanted}, got {value}")
        return number

    parse.__name__ = "number"
    return parse


def auto_or(parse: Check) -> Check:
    """'auto', or what ``parse`` accepts."""
    return word_or("auto", parse)


def word_or(word: str, parse: Check) -> Check:
    """``word``, or what ``parse`` accepts."""

    def parse_word(value: Any) -> Any:
        return word if value == word else parse(value)

    parse_word.__name__ = "value"
    return parse_word


def device(value: Any) -> str:
    """cpu, cuda or cuda:N."""
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise CheckError(f"expected cpu, cuda or cuda:N, got {value!r}")
    return value


def shape(value: Any) -> str:
    """CxHxW, three positive integers (an input's shape, e.g. 3x512x1024)."""
    if not isinstance(value, str) or not re.fullmatch(r"[1-9]\d*x[1-9]\d*x[1-9]\d*", value):
        raise CheckError(f"expected CxHxW such as 3x512x1024, got {value!r}")
    return value


def parse_shape(value: str) -> tuple[int, int, int]:
    """The (C, H, W) of a value `shape` accepted."""
    c, h, w = (int(part) for part in shape(value).split("x"))
    return c, h, w


def text(value: Any) -> str:
    """Any string (a name, a path)."""
    if not isinstance(value, str):
        raise CheckError(f"expected a string, got {value!r}")
    return value


def json_file(value: Any) -> str:
    """A path ending in .json (a file the project writes, never any file)."""
    if not isinstance(value, str) or not value.endswith(".json"):
        raise CheckError(f"expected a path ending in .json, got {value!r}")
    return value


def choice(names: Sequence[str]) -> Check:
    """One of ``names``."""

    def parse(value: Any) -> str:
        if value not in names:
            raise CheckError(f"expected one of {', '.join(names)}, got {value!r}")
        return value

    parse.__name__ = "choice"
    return parse


def flag(value: Any) -> bool:
    """True or False (a switch on the command line)."""
    if not isinstance(value, bool):
        raise CheckError(f"expected true or false, got {value!r}")
    return value


positive = integer(1)
non_negative = integer(0)
seed = integer(0, 2**32 - 1)
fraction = real(0.0, 1.0)  # [0, 1]
share = real(0.0, 1.0, open_low=True)  # (0, 1]
positive_real = real(0.0, open_low=True)
non_negative_real = real(0.0)


def option(default: Any, help: str, *, check: Check = text, choices: Sequence[str] = (),
           many: bool = False, metavar: str | None = None,
           cli: bool = True, absent: Any = dataclasses.MISSING) -> Any:
    """A config field that is also a command-line option (cleanrl's style: the field carries
    its help).

    Args:
        default: the default value (a list default is copied per instance).
        help: the option's ``--help`` text.
        check: what the value must be (`positive`, `share`, ...; `text` by default).
        choices: the names allowed (the check becomes `choice`).
        many: a list of such values (``nargs``).
        metavar: how ``--help`` names the value.
        cli: False for a field the command line does not offer.
        absent: what a saved file (args.json, plan.json) that lacks the field stands for
            (default: ``default``). Set it to the old behaviour when a default changes, so a
            run or sweep written before the change resumes as it ran rather than switching
            to the new default (`Options.from_dict`).
    """
    check = choice(choices) if choices else check
    metadata = {"help": help, "check": check, "choices": tuple(choices), "many": many,
                "metavar": metavar, "cli": cli}
    if absent is not dataclasses.MISSING:
        metadata["absent"] = absent
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Options:
    """Base of the configs: a dataclass whose fields are `option`s, checked when made.

    Values given as text (the command line's) are parsed by the field's check; a value that
    is refused raises `CheckError` naming the field. Nested configs are fields whose type is
    another `Options` dataclass.
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if "check" not in field.metadata or (value is None and field.default is None):
                continue
            check = field.metadata["check"]
            try:
                if field.metadata["many"]:
                    if not isinstance(value, (list, tuple)):
                        raise CheckError(f"expected a list, got {value!r}")
                    value = [check(v) for v in value]
                else:
                    value = check(value)
            except CheckError as err:
                raise CheckError(f"{field.name}: {err}") from None
            object.__setattr__(self, field.name, value)  # configs are frozen

    def to_dict(self) -> dict[str, Any]:
        """Plain values (nested configs as dicts), as args.json holds them."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str) -> Self:
        """A config from plain values (a run's args.json), checked as the command line is.
        A field the values lack takes its `option`'s ``absent`` value where it has one (the
        behaviour before the field existed), else its default.

        Raises:
            ValueError: naming ``source``, for an unknown field, a missing nested config or a
                refused value.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected an object of {cls.__name__} fields, got "
                             f"{type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"{source} holds options {cls.__name__} does not have: "
                             f"{', '.join(sorted(unknown))}")
        kwargs = {name: f.metadata["absent"] for name, f in fields.items()
                  if name not in values and "absent" in f.metadata}
        for name, value in values.items():
            nested = nested_options(cls, name)
            kwargs[name] = (nested.from_dict(value, f"{source} ({name})") if nested
                            else value)
        try:
            return cls(**kwargs)
        except CheckError as err:
            raise ValueError(f"{source}: {err}") from None


def nested_options(cls: type, name: str) -> type[Options] | None:
    """The config class of field ``name`` of ``cls`` when it is a nested config."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        return None
    return hint if isinstance(hint, type) and issubclass(hint, Options) else None
