"""The command line, generated from the configs' fields (`prune_env.config`): each field is an
option ``--field-name`` with the field's help and check, each config a group of ``--help``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection
from typing import Any, TypeVar

from prune_env import checks
from prune_env.checks import Options, nested_options

C = TypeVar("C", bound=Options)


def add_options(parser: argparse.ArgumentParser, cls: type[Options], *,
                skip: Collection[str] = ()) -> None:
    """Add the options of config ``cls`` (and of its nested configs) to ``parser``, except the
    fields named in ``skip``."""
    own = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = nested_options(cls, field.name)
        if nested is not None:
            add_options(parser, nested, skip=skip)
        elif field.metadata.get("cli") and field.name not in skip:
            own.append(field)
    group = parser.add_argument_group((cls.__doc__ or cls.__name__).strip().splitlines()[0])
    for field in own:
        meta = field.metadata
        default = (field.default if field.default_factory is dataclasses.MISSING
                   else field.default_factory())
        flag = "--" + field.name.replace("_", "-")
        if meta["check"] is checks.flag:
            group.add_argument(flag, action="store_true", help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"type": meta["check"], "default": default,
                                  "help": meta["help"], "metavar": meta["metavar"]}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["many"]:
            kwargs["nargs"] = "*"
        group.add_argument(flag, **kwargs)


def config_from(args: argparse.Namespace, cls: type[C]) -> C:
    """The config ``cls`` from parsed arguments (fields the command does not offer keep their
    defaults)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = nested_options(cls, field.name)
        if nested is not None:
            values[field.name] = config_from(args, nested)
        elif field.metadata.get("cli") and hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    return cls(**values)
