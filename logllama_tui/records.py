"""The plain data that flows through the pipeline: line -> record -> keyed event -> sequence."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Line:
    """One line as read: where it came from and its decoded text (no line ending)."""

    source: str
    """The file's path as given (or "-" for stdin)."""
    lineno: int
    """1-based line number within `source`."""
    text: str
    truncated: bool = False
    """True when the line was longer than the reader's limit and was cut."""


@dataclass(slots=True)
class Record:
    """A line split by a format into header fields and the message content."""

    source: str
    lineno: int
    text: str
    """The raw line."""
    content: str
    """The message part that the parser turns into a template."""
    timestamp: float | None = None
    """Seconds since the epoch (or any monotone clock of the log), when the format has one."""
    level: str | None = None
    component: str | None = None
    label: str | None = None
    """Inline label: None when the format has none, "-" normal, anything else an alert category."""
    sessions: tuple[str, ...] = ()
    """Session ids the format already knows (DeepLog key files); else the windower finds them."""
    event_id: str | None = None
    """Already-parsed input: the key's name (structured CSV EventId, DeepLog key)."""
    template: str | None = None
    """Already-parsed input: the template text, when known."""

    @property
    def is_alert(self) -> bool:
        """True when an inline label marks this line anomalous."""
        return self.label is not None and self.label != "-"


@dataclass(slots=True)
class Event:
    """A record with its log key."""

    record: Record
    key: int
    """Log key (see config.UNK etc.)."""
    template: str


@dataclass(slots=True)
class Sequence:
    """A finished window or session: keys in order, each pointing back at its line."""

    sid: str
    """Session id, or "<source>#<first lineno>" for windows."""
    keys: list[int] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    """records[i] is where keys[i] came from."""
    label: bool | None = None
    """True anomalous, False normal, None unknown (unlabelled data counts as normal in training)."""

    def __len__(self) -> int:
        return len(self.keys)
