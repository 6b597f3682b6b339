"""Argument types that check their value, so that a bad number is a clear message and exit
code 2 from argparse before anything is loaded or created.

Each is a callable for ``add_argument(type=...)``: it returns the parsed value or raises
``argparse.ArgumentTypeError`` with what the option accepts.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in [low, high]."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"expected an integer {'>= ' + str(low) if high is None else f'in [{low}, {high}]'}"
                f", got {text}")
        return value

    parse.__name__ = "integer"  # what argparse names in its message
    return parse


def real(low: float, high: float | None = None, *, open_low: bool = False
         ) -> Callable[[str], float]:
    """A finite number in [low, high] (or (low, high] with ``open_low``)."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if value < low or (open_low and value == low) or (high is not None and value > high):
            bracket = "(" if open_low else "["
            span = f"{bracket}{low}, {high}]" if high is not None else None
            wanted = (f"in {span}" if span else f"{'>' if open_low else '>='} {low}")
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def auto_or(parse: Callable[[str], float]) -> Callable[[str], float | str]:
    """'auto', or what ``parse`` accepts."""

    def parse_auto(text: str) -> float | str:
        return "auto" if text == "auto" else parse(text)

    parse_auto.__name__ = "value"
    return parse_auto


def device(text: str) -> str:
    """cpu, cuda or cuda:N."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


positive = integer(1)
non_negative = integer(0)
seed = integer(0, 2**32 - 1)
fraction = real(0.0, 1.0)  # [0, 1]
share = real(0.0, 1.0, open_low=True)  # (0, 1]
positive_real = real(0.0, open_low=True)
non_negative_real = real(0.0)
