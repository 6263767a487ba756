"""Errors caused by the input or the configuration, as opposed to bugs.

The command line ends on one of these with its message (what is wrong, with the numbers, and
what to do) and exit code 2; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

EMPTY_REMEDY = "give a file with the data contract's header (README, PRODUCT.md) and at least one row"


class InputError(ValueError):
    """The data or the settings cannot do what was asked. ``problem`` says what is wrong, with
    the numbers; ``remedy`` (optional) what to do about it. ``str()`` gives both, one per line."""

    def __init__(self, problem: str, remedy: str | None = None):
        super().__init__(problem if remedy is None else f"{problem}\n{remedy}")
        self.problem, self.remedy = problem, remedy


class IngestError(InputError):
    """A file is unreadable or does not fit the data contract; the message names the file."""


class ShortHistory(InputError):
    """The purchase history is too short (or too sparse) for the evaluation protocol's split."""
