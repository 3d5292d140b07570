"""Live scoring for `tail` (no textual here): lines -> records -> keys -> a verdict per line, now.

A finished sequence's verdict comes too late for a live tool (a session closes when it goes idle,
a window when it fills), so every line is scored as it lands: each open sequence keeps the keys it
has so far, and the keys that arrived in a batch are ranked given that prefix: on CPU by
stream.StreamScorer, which keeps each sequence's KV cache and feeds only the new keys (one batched
pass over all sequences touched); elsewhere by one forward pass over prefix + new keys. A line's rank therefore equals the rank its key
gets when the whole finished sequence is scored (a teacher-forced causal model only looks back),
which tests/test_tail_plain.py checks against `Scorer.score` on the windower's sequences.

Which sequence a line is scored in mirrors windows.py: its first session id (session mode), or
the earliest open window that holds it (count and time windows, per file). A line with no
session id is in no sequence: it is flagged only when its template was never seen.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import UNK, WindowConfig
from .records import Line, Record
from .windows_fixed import window_start_iso  # ids must match the ones scan reports

CONTEXT_LINES = 8
"""Previous lines of its sequence kept with each verdict (the details pane shows them)."""
SCORER_CACHE = 4096
"""Prefix tuples the scorer remembers (x 50 when it counts keys instead): live prefixes grow, so a
big cache would only cost memory."""

EXPIRE_EVERY = 1.0
"""Seconds between checks for sessions idle past their timeout."""

Sink = Callable[[list["LineVerdict"]], None]
Notice = Callable[[str, str], None]


@dataclass(slots=True)
class LineVerdict:
    """One line with its key and, when it is in a sequence, its rank given the keys before it."""

    source: str
    lineno: int
    text: str
    key: int
    template: str
    sid: str | None = None
    rank: int | None = None
    """Candidates scored above the true key; None when the line is in no sequence."""
    anomalous: bool = False
    kind: str | None = None
    """None, "unseen" (template never seen in training) or "rank" (rank >= k)."""
    candidates: list[tuple[int, float, str]] = field(default_factory=list)
    """(key, probability, template), most likely first."""
    context: list[tuple[int, str, int, str]] = field(default_factory=list)
    """(lineno, text, key, template) of the previous lines of its sequence, oldest first."""
    k: int = 0

    def to_json(self) -> dict[str, Any]:
        """The `--json` / export record."""
        return {
            "file": self.source, "line": self.lineno, "text": self.text, "key": self.key,
            "template": self.template, "anomaly": self.anomalous, "kind": self.kind,
            "rank": self.rank, "k": self.k, "sequence": self.sid,
            "candidates": [{"key": k, "prob": round(p, 6), "template": t}
                           for k, p, t in self.candidates],
        }


class _Open:
    """An open sequence: all its keys (the prefix) and its last few lines."""

    __slots__ = ("sid", "keys", "recent", "last", "wall")

    def __init__(self, sid: str, wall: float) -> None:
        self.sid = sid
        self.keys: list[int] = []
        self.recent: deque[tuple[int, str, int, str]] = deque(maxlen=CONTEXT_LINES)
        self.last: float | None = None
        self.wall = wall


class Tracker:
    """Open sequences, per windows.py's rules; `assign` puts a keyed line into them."""

    def __init__(self, config: WindowConfig, mode: str) -> None:
        from .windows import session_finder

        self.config, self.mode = config, mode
        self._find = session_finder(config.session_regex)
        self.sessions: OrderedDict[str, _Open] = OrderedDict()
        self.log_now: float | None = None
        self.first_ts: float | None = None
        self.windows: dict[str, dict[int, _Open]] = {}
        self.counts: dict[str, int] = {}
        self.times: dict[str, float] = {}
        self.done: dict[str, int] = {}
        """Per file: every time window k <= done is closed."""

    @property
    def open_count(self) -> int:
        return len(self.sessions) + sum(len(w) for w in self.windows.values())

    def assign(self, rec: Record, key: int, template: str, wall: float) -> tuple[_Open, int] | None:
        """Append the line to its sequences; (the one it is scored in, its index) or None."""
        if self.mode == "session":
            joined = self._sessions(rec, wall)
        else:
            joined = self._windows(rec, wall)
        if not joined:
            return None
        entry = (rec.lineno, rec.text, key, template)
        for seq in joined:
            seq.keys.append(key)
            seq.recent.append(entry)
        first = joined[0]
        return first, len(first.keys) - 1

    def _sessions(self, rec: Record, wall: float) -> list[_Open]:
        ids = list(dict.fromkeys(rec.sessions)) if rec.sessions else self._find(rec.text)
        ts = rec.timestamp
        timeout = self.config.session_timeout
        if ts is not None and (self.log_now is None or ts > self.log_now):
            self.first_ts = ts if self.first_ts is None else self.first_ts
            self.log_now = ts
            while self.sessions:  # idle by log time, least recently active first
                s = next(iter(self.sessions.values()))
                last = s.last if s.last is not None else self.first_ts
                if last is None or last >= ts - timeout:
                    break
                self.sessions.popitem(last=False)
        out = []
        for sid in ids:
            s = self.sessions.get(sid)
            if s is None:
                s = self.sessions[sid] = _Open(sid, wall)
            else:
                self.sessions.move_to_end(sid)
            s.last, s.wall = self.log_now, wall
            out.append(s)
        while len(self.sessions) > self.config.max_open_sessions:
            self.sessions.popitem(last=False)
        return out

    def _windows(self, rec: Record, wall: float) -> list[_Open]:
        src = rec.source
        wins = self.windows.setdefault(src, {})
        if self.mode == "count":
            size, step = self.config.window_size, self.config.step
            i = self.counts.get(src, 0)
            self.counts[src] = i + 1
            lo, hi = max(0, math.ceil((i - size + 1) / step)), i // step
            name = f"{src}#{{}}"
        else:
            w, s = self.config.window_seconds, self.config.step_seconds
            now = self.times.get(src)
            t = rec.timestamp if rec.timestamp is not None else now
            if t is None:
                t = 0.0  # before the file's first timestamp (windows.py holds these back)
            elif now is None or t > now:
                self.times[src] = t
                self.done[src] = math.floor((t - w) / s)
            done = self.done.get(src, -(2**62))
            lo, hi = math.floor((t - w) / s) + 1, math.floor(t / s)
            if lo <= done:  # a late line joins the next open window, as in windows.py
                lo = done + 1
                hi = max(hi, lo)
            name = ""
        for k in [k for k in wins if k < lo]:
            del wins[k]
        out = []
        for k in range(lo, hi + 1):
            seq = wins.get(k)
            if seq is None:  # the same ids as windows.py gives the finished windows
                sid = name.format(rec.lineno) if name else f"{src}@{window_start_iso(k * self.config.step_seconds)}"
                seq = wins[k] = _Open(sid, wall)
            seq.wall = wall
            out.append(seq)
        return out

    def expire(self, now: float) -> None:
        """Drop sessions idle for session_timeout of wall time (windows.py's `expire`)."""
        while self.sessions:
            s = next(iter(self.sessions.values()))
            if now - s.wall <= self.config.session_timeout:
                break
            self.sessions.popitem(last=False)


class LiveScorer:
    """Records in, one LineVerdict per record out, each ranked given its sequence's prefix."""

    def __init__(self, parser: Any, scorer: Any, window: WindowConfig, default_mode: str) -> None:
        self.parser, self.scorer = parser, scorer
        self.window, self.default_mode = window, default_mode
        self.tracker: Tracker | None = None
        self.mode: str | None = None
        self.keys = 0
        self._streamer: Any = None
        """stream.StreamScorer: each open sequence's KV cache (or LSTM state), fed only new keys."""

    def process(self, records: list[Record], wall: float | None = None) -> list[LineVerdict]:
        """Verdicts for `records`, in order."""
        from .records import Sequence
        from .windows import resolve_mode

        if self.tracker is None:
            self.mode = resolve_mode(self.window, self.default_mode, records[:200])
            self.tracker = Tracker(self.window, self.mode)
        wall = time.monotonic() if wall is None else wall
        tracker, template_of = self.tracker, self.parser.template
        out: list[LineVerdict] = []
        placed: list[tuple[_Open, int] | None] = []
        for rec in records:
            ev = self.parser.match(rec)
            seq_ctx = None
            where = tracker.assign(rec, ev.key, ev.template, wall)
            if where is not None:
                seq, idx = where
                seq_ctx = list(seq.recent)[:-1]
            v = LineVerdict(rec.source, rec.lineno, rec.text, ev.key, ev.template, k=self.scorer.k)
            if seq_ctx is not None and where is not None:
                v.sid, v.context = where[0].sid, seq_ctx
            elif ev.key == UNK:
                v.anomalous, v.kind = True, "unseen"
            out.append(v)
            placed.append(where)
        # one job per sequence touched: its keys up to the last one that arrived now
        upto: dict[int, tuple[_Open, int, int]] = {}
        for where in placed:
            if where is not None:
                seq, idx = where
                lo, hi = upto[id(seq)][1:] if id(seq) in upto else (idx, idx)
                upto[id(seq)] = (seq, min(lo, idx), max(hi, idx))
        jobs = list(upto.values())
        stream = self._stream()
        if stream is not None:  # incremental: only the new keys run, on each sequence's cache
            ranked = stream.rank([(s, s.keys[: hi + 1], lo) for s, lo, hi in jobs]) if jobs else []
            verdicts = {id(s): (lo, vs) for (s, lo, _), vs in zip(jobs, ranked, strict=True)}
        else:
            scored = self.scorer.score([Sequence(s.sid, s.keys[: hi + 1]) for s, _, hi in jobs]) \
                if jobs else []
            verdicts = {id(s): (0, sc.verdicts) for (s, _, _), sc in zip(jobs, scored, strict=True)}
        for v, where in zip(out, placed, strict=True):
            if where is None:
                continue
            first, vs = verdicts[id(where[0])]
            kv = vs[where[1] - first]
            v.rank, v.anomalous, v.kind = kv.rank, kv.anomalous, kv.kind
            v.candidates = [(k, p, template_of(k)) for k, p in kv.candidates]
        self.keys += len(out)
        return out

    def _stream(self) -> Any:
        """A stream.StreamScorer over the scorer's model (CPU), made once; None: re-run prefixes."""
        if self._streamer is None:
            self._streamer = False
            model = getattr(self.scorer, "model", None)
            device = getattr(self.scorer, "device", None)
            if model is not None and getattr(device, "type", "cpu") == "cpu":
                from .stream import StreamScorer

                self._streamer = StreamScorer(
                    model, self.scorer.n_keys, self.scorer.k, self.scorer.n_candidates,
                    context=self.scorer.context, all_candidates=self.scorer.all_candidates)
        return self._streamer or None

    def expire(self, now: float) -> None:
        """Release sessions idle for session_timeout of wall time (bounded memory)."""
        if self.tracker is not None:
            self.tracker.expire(now)


@dataclass
class Engine:
    """What the worker needs once the model is loaded."""

    fmt: Any
    live: LiveScorer
    model_name: str
    device: str
    info: dict[str, Any] = field(default_factory=dict)


class LiveWorker:
    """A thread: queued Lines -> batches of `batch_ms` -> Engine -> `sink(verdicts)`.

    `load()` runs in this thread (transformers costs seconds to import); lines submitted meanwhile
    wait in the queue and are scored once it returns. A load error goes to `on_notice` and the
    worker then only drains its queue.
    """

    def __init__(self, load: Callable[[], Engine], sink: Sink, on_notice: Notice | None = None,
                 on_ready: Callable[[Engine], None] | None = None, batch_ms: int = 50,
                 max_batch: int = 2048) -> None:
        self.load, self.sink = load, sink
        self.on_notice = on_notice or (lambda level, msg: None)
        self.on_ready = on_ready
        self.batch_s = max(0.001, batch_ms / 1000)
        self.max_batch = max_batch
        self.queue: queue.SimpleQueue[list[Line] | None] = queue.SimpleQueue()
        self.engine: Engine | None = None
        self.failed = False
        self.error: str | None = None
        """Why the model did not load."""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="live-score", daemon=True)
        self.sniffed = False
        self._lock = threading.Lock()
        self.pending = 0
        """Lines queued and not scored yet (the UI shows it while the model loads)."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, lines: list[Line]) -> None:
        """Queue lines (any thread)."""
        with self._lock:
            self.pending += len(lines)
        self.queue.put(lines)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Score what is queued, then end the thread."""
        self.queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.engine = self.load()
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app keeps running
            self.failed = True
            self.error = _message(exc)
            self.on_notice("error", self.error)
        else:
            if self.on_ready is not None:
                self.on_ready(self.engine)
        done = False
        last_expire = time.monotonic()
        while not done:
            try:
                item = self.queue.get(timeout=EXPIRE_EVERY)
            except queue.Empty:
                item = []
            if item is None:
                break
            now = time.monotonic()
            if self.engine is not None and now - last_expire >= EXPIRE_EVERY:
                self.engine.live.expire(now)
                last_expire = now
            if not item:
                continue
            batch = list(item)
            deadline = time.monotonic() + self.batch_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    more = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.extend(more)
            self._handle(batch)

    def _handle(self, lines: list[Line]) -> None:
        engine = self.engine
        if engine is None:
            with self._lock:
                self.pending -= len(lines)
            return
        try:
            if not self.sniffed:
                from .live_engine import check_format

                self.sniffed = True
                check_format(engine, lines, self.on_notice)
            verdicts = engine.live.process(list(engine.fmt.records(lines)))
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the tail
            self.on_notice("error", f"could not score {len(lines)} lines: {_message(exc)}")
            verdicts = []
        with self._lock:
            self.pending -= len(lines)
        if verdicts:
            self.sink(verdicts)


def _message(exc: BaseException) -> str:
    from .errors import LogLlamaError

    if isinstance(exc, LogLlamaError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Engine", "LineVerdict", "LiveScorer", "LiveWorker", "Tracker"]
