"""The one exception type a user's mistake raises; the CLI prints it as one line, no traceback."""

from __future__ import annotations


class LogLlamaError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


class BadInput(LogLlamaError):
    """A file, line, option or value we cannot use."""


class BadCheckpoint(LogLlamaError):
    """A checkpoint or parser state that is missing, corrupt, foreign or unsafe."""
