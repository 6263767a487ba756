"""The error raised when a whole input file cannot be used (as opposed to single bad rows)."""
from __future__ import annotations


class IngestError(ValueError):
    """A file is unreadable or does not fit the data contract; the message names the file."""
