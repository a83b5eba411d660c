"""Argument checking for the ``maskformer`` command, done once, when the line is parsed.

Each ``type=`` function turns the text into a value or raises ``argparse.ArgumentTypeError``
saying what was expected; :class:`ArgumentParser` turns argparse's complaint (usage + message)
into one :class:`UsageError` line that names the flag. Integers take ASCII digits only
(Python's ``int`` also reads other scripts' digits, e.g. ``int("١٢")`` is 12).
"""

from __future__ import annotations

import argparse
import math
import re
from typing import NoReturn

_INTEGER = re.compile(r"[+-]?[0-9]+")

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
"""Exit statuses: done; done with some inputs skipped; stopped by bad input; interrupted."""


class UsageError(ValueError):
    """A bad command line; the message is the one line to print."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError` (one line, naming the
    command and the flag) instead of printing the usage and exiting. Subcommand parsers made by
    ``add_subparsers`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _integer(text: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, counts)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (class ids, seeds)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (score and mask thresholds)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value
