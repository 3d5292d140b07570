"""Time and count windows, per file (see windows.py for the protocol and the factory).

`TimeWindower` cuts each file into windows of `window_seconds` every `step_seconds`, aligned to
multiples of the step from the epoch; a window is emitted once a timestamp of its file reaches its
end. A line without a timestamp takes the latest timestamp seen in its file (lines before the first
timestamp take the first one). A line whose windows were all emitted already (late, out of order)
joins the next window, so no line is ever dropped. `CountWindower` cuts each file into windows of
`window_size` keys every `step` keys.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from .config import WindowConfig
from .errors import BadInput
from .records import Event, Sequence

MAX_OVERLAP = 1000
"""Most time windows one line may belong to (window_seconds / step_seconds)."""
COUNT_IDLE_SECONDS = 10.0
"""Wall time without a line after which `expire` emits a file's partial count window."""
MAX_PENDING = 10_000
"""Lines without any timestamp kept before they are emitted as one untimed window."""

Clock = Callable[[], float]


def events_to_sequence(sid: str, events: Iterable[Event]) -> Sequence:
    """A Sequence from buffered events, records[i] matching keys[i]."""
    seq = Sequence(sid)
    for e in events:
        seq.keys.append(e.key)
        seq.records.append(e.record)
    return seq


def window_start_iso(start: float) -> str:
    """A window start as ISO 8601 UTC, or the plain number when it is no calendar time."""
    try:
        text = datetime.fromtimestamp(start, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{start:g}"
    return text.replace("+00:00", "Z")


class _TimeSource:
    """The open time windows of one file."""

    __slots__ = ("windows", "now", "done", "wall", "pending")

    def __init__(self, wall: float) -> None:
        self.windows: dict[int, Sequence] = {}
        """Window index k (start = k * step) -> its sequence so far."""
        self.now: float | None = None
        """Latest timestamp seen in this file."""
        self.done = -(2**62)
        """Every window k <= done is closed."""
        self.wall = wall
        self.pending: list[Event] = []
        """Lines before the first timestamp of the file."""


class TimeWindower:
    """Time windows per file; see the module docstring."""

    def __init__(self, config: WindowConfig, clock: Clock = time.monotonic,
                 idle_seconds: float | None = None) -> None:
        w, s = config.window_seconds, config.step_seconds
        if not w > 0 or not s > 0:
            raise BadInput(f"--window-seconds and --step-seconds must be above 0 (got {w}, {s})")
        if s > w:
            raise BadInput(f"--step-seconds {s:g} is longer than --window-seconds {w:g}, so lines "
                           "between windows would be lost; use a step at most the window length")
        if w / s > MAX_OVERLAP:
            raise BadInput(f"--window-seconds {w:g} / --step-seconds {s:g} puts each line in "
                           f"{w / s:.0f} windows (at most {MAX_OVERLAP}); use a longer step")
        self._w, self._s = float(w), float(s)
        self._idle = idle_seconds if idle_seconds is not None else float(w)
        self._clock = clock
        self._sources: dict[str, _TimeSource] = {}
        self.orphans = 0
        self.late = 0
        """Lines whose own windows were already emitted: they joined the next window."""

    @property
    def open_count(self) -> int:
        return sum(len(st.windows) + (1 if st.pending else 0) for st in self._sources.values())

    def feed(self, event: Event) -> list[Sequence]:
        """Add one line to every window covering its time; return the windows its time closed."""
        rec = event.record
        st = self._sources.get(rec.source)
        wall = self._clock()
        if st is None:
            st = self._sources[rec.source] = _TimeSource(wall)
        st.wall = wall
        out: list[Sequence] = []
        t = rec.timestamp
        if t is None:
            if st.now is None:
                st.pending.append(event)
                if len(st.pending) >= MAX_PENDING:
                    out.append(self._untimed(rec.source, st))
                return out
            t = st.now
        elif st.now is None or t > st.now:
            st.now = t
            done = math.floor((t - self._w) / self._s)
            if done > st.done:
                st.done = done
                if st.windows and min(st.windows) <= done:
                    self._close(st, done, out)
            if st.pending:
                pending, st.pending = st.pending, []
                for e in pending:
                    self._add(rec.source, st, e, t)
        self._add(rec.source, st, event, t)
        return out

    def _add(self, source: str, st: _TimeSource, event: Event, t: float) -> None:
        """Append the event to each window k with k*step <= t < k*step + window still open."""
        hi = math.floor(t / self._s)
        lo = math.floor((t - self._w) / self._s) + 1
        if lo <= st.done:
            lo = st.done + 1
            if lo > hi:
                hi = lo
                self.late += 1
        windows = st.windows
        for k in range(lo, hi + 1):
            seq = windows.get(k)
            if seq is None:
                seq = windows[k] = Sequence(f"{source}@{window_start_iso(k * self._s)}")
            seq.keys.append(event.key)
            seq.records.append(event.record)

    def _close(self, st: _TimeSource, upto: int, out: list[Sequence]) -> None:
        """Emit the windows k <= upto, oldest first."""
        for k in sorted(k for k in st.windows if k <= upto):
            out.append(st.windows.pop(k))

    def _untimed(self, source: str, st: _TimeSource) -> Sequence:
        """The lines seen before any timestamp, as one window."""
        pending, st.pending = st.pending, []
        return events_to_sequence(f"{source}@untimed#{pending[0].record.lineno}", pending)

    def expire(self, now: float) -> list[Sequence]:
        """Emit the windows of files that got no line for `idle_seconds` of wall time."""
        out: list[Sequence] = []
        for source, st in self._sources.items():
            if now - st.wall > self._idle:
                self._close_all(source, st, out)
        return out

    def _close_all(self, source: str, st: _TimeSource, out: list[Sequence]) -> None:
        if st.pending:
            out.append(self._untimed(source, st))
        if st.windows:
            top = max(st.windows)
            self._close(st, top, out)
            st.done = max(st.done, top)

    def flush(self) -> list[Sequence]:
        """Emit every open window, file by file, oldest first."""
        out: list[Sequence] = []
        for source, st in self._sources.items():
            self._close_all(source, st, out)
        self._sources.clear()
        return out


class _CountSource:
    """The last `window_size` events of one file and where the next window starts."""

    __slots__ = ("buf", "n", "start", "end", "wall")

    def __init__(self, size: int, wall: float) -> None:
        self.buf: deque[Event] = deque(maxlen=size)
        self.n = 0
        """Events seen in this file."""
        self.start = 0
        """Index of the first event of the next window."""
        self.end = 0
        """One past the last event of the last emitted window."""
        self.wall = wall


class CountWindower:
    """Windows of `window_size` keys every `step` keys, per file; see the module docstring."""

    def __init__(self, config: WindowConfig, clock: Clock = time.monotonic,
                 idle_seconds: float = COUNT_IDLE_SECONDS) -> None:
        size, step = config.window_size, config.step
        if size < 1 or step < 1:
            raise BadInput(f"--window-size and --step must be at least 1 (got {size}, {step})")
        if step > size:
            raise BadInput(f"--step {step} is larger than --window-size {size}, so lines between "
                           "windows would be lost; use a step at most the window size")
        self._size, self._step = size, step
        self._idle = idle_seconds
        self._clock = clock
        self._sources: dict[str, _CountSource] = {}
        self.orphans = 0
        self.late = 0

    @property
    def open_count(self) -> int:
        return sum(1 for st in self._sources.values() if st.n > max(st.start, st.end))

    def feed(self, event: Event) -> list[Sequence]:
        """Add one line; return the window it completes, if any."""
        source = event.record.source
        st = self._sources.get(source)
        if st is None:
            st = self._sources[source] = _CountSource(self._size, 0.0)
        st.wall = self._clock()
        st.buf.append(event)
        st.n += 1
        if st.n - st.start < self._size:
            return []
        st.start += self._step
        st.end = st.n
        buf = st.buf
        return [events_to_sequence(f"{source}#{buf[0].record.lineno}", buf)]

    def _partial(self, source: str, st: _CountSource) -> list[Sequence]:
        """The trailing window of a file, unless empty or inside the last emitted one."""
        if st.n <= st.start or st.n <= st.end:
            return []
        events = list(st.buf)[-(st.n - st.start):]
        return [events_to_sequence(f"{source}#{events[0].record.lineno}", events)]

    def expire(self, now: float) -> list[Sequence]:
        """Emit the partial windows of files idle for `idle_seconds`; their next window starts afresh."""
        out: list[Sequence] = []
        for source, st in self._sources.items():
            if now - st.wall > self._idle:
                done = self._partial(source, st)
                if done:
                    out += done
                    st.buf.clear()
                    st.start = st.end = st.n
        return out

    def flush(self) -> list[Sequence]:
        """Emit the trailing partial window of every file."""
        out: list[Sequence] = []
        for source, st in self._sources.items():
            out += self._partial(source, st)
        self._sources.clear()
        return out


__all__ = ["COUNT_IDLE_SECONDS", "Clock", "CountWindower", "TimeWindower", "events_to_sequence"]
