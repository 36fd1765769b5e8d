"""Argument parsing for ``cryoseg``: one-line usage errors and checked value types.

Every value given on the command line is checked when it is parsed, so a wrong type, a
negative, zero, NaN, infinite or absurdly large number is refused before any file is
read, with one line that names the flag and the accepted range (exit code 2, like every
other problem the user can fix).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = [
    "MAX_SEED",
    "CliParser",
    "UsageError",
    "device_name",
    "float_range",
    "int_range",
    "path_text",
    "seed_value",
]

#: Largest seed numpy's and torch's generators both accept (``2**32 - 1``).
MAX_SEED = 2**32 - 1
#: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")


class UsageError(Exception):
    """A command line that cannot be parsed; ``str(err)`` is the one-line message."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit code 2).

    argparse prints the whole usage block and then the error; with many flags that is a
    screenful in which the one line that matters is easy to miss. Here the error line
    names the command and points to ``--help``. Sub-command parsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` (``main`` prints it as one line and returns 2)."""
        raise UsageError(message, self.prog)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """As argparse, but a message is written as-is (``--help``/``--version`` paths)."""
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _number_text(text: str) -> str:
    return text.strip().lower()


def int_range(
    low: int | None = None, high: int | None = None, *, what: str = "an integer"
) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[low, high]`` (either bound optional).

    Parameters
    ----------
    low, high : int, optional
        Inclusive bounds.
    what : str
        How the accepted values are described in the message, e.g. ``"a tile size"``.
    """

    def parse(text: str) -> int:
        try:
            value = int(_number_text(text), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give {what}{_bounds(low, high)}"
            ) from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range; give {what}{_bounds(low, high)}"
            )
        return value

    parse.__name__ = "integer"
    return parse


def float_range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "a number",
) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite floats between ``low`` and ``high``.

    NaN and ±inf are always refused: no flag of ``cryoseg`` means anything with them.

    Parameters
    ----------
    low, high : float, optional
        Bounds; inclusive unless ``low_open``/``high_open``.
    what : str
        How the accepted values are described in the message.
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if low is not None and high is not None:
        span = f" in {left}{low:g}, {high:g}{right}"
    elif low is not None:
        span = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        span = f" {'<' if high_open else '<='} {high:g}"
    else:
        span = ""

    def parse(text: str) -> float:
        try:
            value = float(_number_text(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; give {what}{span}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number; give {what}{span}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range; give {what}{span}")
        return value

    parse.__name__ = "number"
    return parse


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


#: ``--seed``: what numpy's and torch's generators accept.
seed_value = int_range(0, MAX_SEED, what="a seed")


def path_text(text: str) -> str:
    """An argparse ``type`` for paths: refuses an empty or blank string.

    ``Path("")`` is the current folder, so an empty ``--out ''`` (an unset shell
    variable) would otherwise write into wherever the command was started.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder name")
    if "\0" in text:
        raise argparse.ArgumentTypeError("the path contains a NUL character")
    return text


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``auto``, ``cpu``, ``mps``, ``cuda[:N]``."""
    name = text.strip().lower()
    if not _DEVICE.match(name):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; choose auto, cpu, cuda, cuda:N (N = GPU index) or mps"
        )
    return name
