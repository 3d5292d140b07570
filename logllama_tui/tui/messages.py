"""Typed messages: the follower and scoring threads talk to the app only through these."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class VerdictBatch(Message):
    """A batch of scored lines from the worker thread."""

    def __init__(self, verdicts: list[Any]) -> None:
        super().__init__()
        self.verdicts = verdicts


class Notice(Message):
    """Something the user should know (missing file, permission, format mismatch, load error)."""

    def __init__(self, level: str, text: str) -> None:
        super().__init__()
        self.level = level
        self.text = text


class ModelReady(Message):
    """The model has loaded in the worker thread."""

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine


class CursorMoved(Message):
    """The selected line in the log view changed."""

    def __init__(self, verdict: Any | None) -> None:
        super().__init__()
        self.verdict = verdict
