"""The command line's argument types: a bad value is one line that says what was expected and what
was given (argparse turns ``ArgumentTypeError`` into ``prog: error: argument --x: …``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An argument error is one line, the message and where the usage is, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def number(text: str, kind: type, minimum: float, strict: bool) -> Any:
    what = "an integer" if kind is int else "a number"
    bound = "" if minimum == -math.inf else f" {'>' if strict else '>='} {minimum:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}{bound}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
    if value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"expected {what}{bound}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return number(text, float, 0, strict=True)


def non_negative_float(text: str) -> float:
    return number(text, float, 0, strict=False)


def non_negative_int(text: str) -> int:
    return number(text, int, 0, strict=False)


def positive_int(text: str) -> int:
    return number(text, int, 1, strict=False)


def integer(text: str) -> int:
    return number(text, int, -math.inf, strict=False)


def listed(kind: Callable[[str], Any], none: bool = False) -> Callable[[str], list[Any]]:
    """An argparse type: comma-separated values of ``kind`` (and ``none`` for None, if allowed)."""

    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return [None if none and item.lower() == "none" else kind(item) for item in items]

    return parse
