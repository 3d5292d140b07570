"""The Textual app of `logllama tail`: a thin layer over follow.py and live.py."""

from __future__ import annotations

__all__ = ["make_app"]


def make_app(*args: object, **kwargs: object) -> object:
    """See logllama_tui.tui.app.make_app (imported lazily: textual costs time)."""
    from .app import make_app as _make

    return _make(*args, **kwargs)  # type: ignore[arg-type]
