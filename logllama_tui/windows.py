"""Keyed events -> finished sequences, streaming: one event in, zero or more sequences out.

Three windowers share one protocol (`feed`, `flush`, `expire`, `open_count`):

- `SessionWindower` groups lines by session id (the format's ids, else every distinct match of a
  regex in the raw line; a line naming two sessions joins both). A session is closed when it has
  been idle longer than `session_timeout` of log time (the latest timestamp seen), when more than
  `max_open_sessions` are open (least recently active first), by `expire(now)` after
  `session_timeout` of wall time without a line, and by `flush()`.
- `TimeWindower` and `CountWindower` (windows_fixed.py) cut each file into time windows of
  `window_seconds` every `step_seconds`, or into windows of `window_size` keys every `step` keys.

Memory is bounded by the open sessions or windows, never by the length of the input.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from .config import WindowConfig
from .errors import BadInput
from .records import Event, Record, Sequence
from .windows_fixed import COUNT_IDLE_SECONDS, Clock, CountWindower, TimeWindower

MODES = ("session", "time", "count")


class Windower(Protocol):
    """What every windower offers; `now` in `expire` is read from the windower's clock."""

    orphans: int
    late: int

    def feed(self, event: Event) -> list[Sequence]: ...

    def flush(self) -> list[Sequence]: ...

    def expire(self, now: float) -> list[Sequence]: ...

    @property
    def open_count(self) -> int: ...


def compile_session_regex(pattern: str) -> re.Pattern[str]:
    """The session regex, or BadInput saying how it is broken."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadInput(f"--session-regex {pattern!r} is not a valid regular expression ({exc}); "
                       "fix the pattern") from None


def session_finder(pattern: str | re.Pattern[str]) -> Callable[[str], list[str]]:
    """A function giving every session id in a line (the whole match, repeats included)."""
    regex = compile_session_regex(pattern) if isinstance(pattern, str) else pattern
    if regex.groups == 0:
        return regex.findall
    finditer = regex.finditer
    return lambda text: [m.group(0) for m in finditer(text)]


NO_TIME = float("-inf")


class _Session:
    """An open session: its sequence, the log clock and the wall clock at its last line."""

    __slots__ = ("seq", "last", "wall")

    def __init__(self, seq: Sequence, last: float, wall: float) -> None:
        self.seq, self.last, self.wall = seq, last, wall


class SessionWindower:
    """Groups lines by session id; see the module docstring."""

    def __init__(self, config: WindowConfig, clock: Clock = time.monotonic,
                 on_orphan: Callable[[Event], None] | None = None) -> None:
        if config.session_timeout <= 0:
            raise BadInput(f"--session-timeout must be above 0 (got {config.session_timeout})")
        if config.max_open_sessions < 1:
            raise BadInput(f"max_open_sessions must be at least 1 (got {config.max_open_sessions})")
        self._find = session_finder(config.session_regex)
        self._timeout = config.session_timeout
        self._max_open = config.max_open_sessions
        self._clock = clock
        self._open: OrderedDict[str, _Session] = OrderedDict()
        self._log_now = NO_TIME
        """The log clock: the latest timestamp seen (NO_TIME before the first)."""
        self._first_ts = NO_TIME
        self._check_at = NO_TIME
        """No open session can be idle past the timeout before the log clock passes this."""
        self.on_orphan = on_orphan
        self.orphans = 0
        """Lines that named no session: counted, handed to on_orphan, not windowed."""
        self.late = 0
        self.opened = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def recent(self) -> Iterator[Sequence]:
        """The open sequences, most recently fed first (a fed session moves last in the dict, so
        a caller that stops at the first one it has seen costs only the sessions fed since)."""
        return (s.seq for s in reversed(self._open.values()))

    def feed(self, event: Event) -> list[Sequence]:
        """Add one line to each session it names; return the sessions this closed."""
        rec = event.record
        ids = rec.sessions or self._find(rec.text)
        if len(ids) > 1:
            ids = list(dict.fromkeys(ids))  # named twice in one line: counted once
        out: list[Sequence] = []
        ts = rec.timestamp
        if ts is not None and ts > self._log_now:
            if self._first_ts == NO_TIME:
                self._first_ts = ts
            self._log_now = ts
            if ts > self._check_at:
                self._close_idle(ts - self._timeout, out)
        if not ids:
            self.orphans += 1
            if self.on_orphan is not None:
                self.on_orphan(event)
            return out
        wall = self._clock()
        sessions = self._open
        log_now = self._log_now
        key = event.key
        for sid in ids:
            s = sessions.get(sid)
            if s is None:
                s = sessions[sid] = _Session(Sequence(sid), log_now, wall)
                self.opened += 1
            else:
                sessions.move_to_end(sid)
                s.last = log_now
                s.wall = wall
            seq = s.seq
            seq.keys.append(key)
            seq.records.append(rec)
        if len(sessions) > self._max_open:
            while len(sessions) > self._max_open:
                out.append(sessions.popitem(last=False)[1].seq)
        return out

    def _close_idle(self, before: float, out: list[Sequence]) -> None:
        """Close the least recently active sessions whose last log time is before `before`."""
        sessions = self._open
        while sessions:
            s = next(iter(sessions.values()))
            last = s.last if s.last != NO_TIME else self._first_ts
            if last >= before:
                # The front is the least recently active: nothing can be idle before this.
                self._check_at = last + self._timeout
                return
            out.append(sessions.popitem(last=False)[1].seq)
        self._check_at = NO_TIME

    def expire(self, now: float) -> list[Sequence]:
        """Close the sessions that got no line for `session_timeout` seconds of wall time."""
        out: list[Sequence] = []
        sessions = self._open
        while sessions:
            s = next(iter(sessions.values()))
            if now - s.wall <= self._timeout:
                break
            out.append(sessions.popitem(last=False)[1].seq)
        return out

    def flush(self) -> list[Sequence]:
        """Close every open session, least recently active first."""
        out = [s.seq for s in self._open.values()]
        self._open.clear()
        return out


def resolve_mode(config: WindowConfig, default_mode: str = "count",
                 sample: Iterable[Record] = ()) -> str:
    """The window mode to use: config.mode, or for auto the format's default, refined by a sample.

    Auto picks session when the sample's records carry session ids or at least half of them match
    the session regex, and count instead of time when no record of the sample has a timestamp.
    """
    mode = config.mode
    records = list(sample)
    if mode != "auto":
        if mode not in MODES:
            raise BadInput(f"unknown window mode {mode!r}; use session, time, count or auto")
        if mode == "time" and records and all(r.timestamp is None for r in records):
            raise BadInput(f"--window time needs timestamps, and the first {len(records)} lines of "
                           f"{records[0].source} have none; use --window count or session")
        return mode
    if default_mode not in MODES:
        raise BadInput(f"unknown window mode {default_mode!r}; use session, time, count or auto")
    if not records or default_mode == "session":
        return default_mode
    if any(r.sessions for r in records):
        return "session"
    search = compile_session_regex(config.session_regex).search
    if 2 * sum(1 for r in records if search(r.text)) >= len(records):
        return "session"
    if default_mode == "time" and all(r.timestamp is None for r in records):
        return "count"
    return default_mode


def make_windower(config: WindowConfig, default_mode: str = "count", clock: Clock = time.monotonic,
                  on_orphan: Callable[[Event], None] | None = None,
                  idle_seconds: float | None = None) -> Windower:
    """The windower for config.mode ("auto" means `default_mode`, the format's default_window).

    `clock` is what `expire(now)` compares `now` with; `idle_seconds` is the wall time after which
    `expire` closes the open windows of a quiet file (default: window_seconds for time windows,
    COUNT_IDLE_SECONDS for count windows; sessions use session_timeout).
    """
    mode = resolve_mode(config, default_mode)
    if mode == "session":
        return SessionWindower(config, clock, on_orphan)
    if mode == "time":
        return TimeWindower(config, clock, idle_seconds)
    return CountWindower(config, clock, COUNT_IDLE_SECONDS if idle_seconds is None else idle_seconds)


__all__ = [
    "CountWindower", "MODES", "SessionWindower", "TimeWindower", "Windower", "compile_session_regex",
    "make_windower", "resolve_mode", "session_finder",
]
