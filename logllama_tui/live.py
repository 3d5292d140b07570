"""Live scoring for `tail` (no textual here): lines -> records -> keys -> a verdict per line, now.

A finished sequence's verdict comes too late for a live tool (a session closes when it goes idle,
a window when it fills), so every line is scored as it lands: each open sequence keeps the keys it
has so far, and the keys that arrived in a batch are ranked given that prefix. A prefix seen
before is answered from a verdict cache (live_prefix.py: logs repeat themselves); the rest, on
CPU, by prefix.PrefixTrie for sequences of up to TRIE_KEYS keys (each distinct prefix run once,
its K/V kept for every sequence that goes through it) and past that by stream.StreamScorer, which
keeps each sequence's KV cache and feeds only the new keys; elsewhere by one forward pass over
prefix + new keys. A line's rank therefore equals the rank its key gets when the whole finished
sequence is scored (a teacher-forced causal model only looks back), which tests/test_tail_plain.py
checks against `Scorer.score` on the windower's sequences.

Which sequence a line is scored in mirrors windows.py: its first session id (session mode), or
the earliest open window that holds it (count and time windows, per file). A line with no
session id is in no sequence: it is flagged only when its template was never seen.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import UNK, WindowConfig
from .live_prefix import PrefixVerdicts
from .records import Record
from .windows_fixed import window_start_iso  # ids must match the ones scan reports

CONTEXT_LINES = 8
"""Previous lines of its sequence kept with each verdict (the details pane shows them)."""
SCORER_CACHE = 4096
"""Prefix tuples the scorer remembers (x 50 when it counts keys instead): live prefixes grow, so a
big cache would only cost memory."""

TRIE_KEYS = 128
"""Sequences up to this many keys are ranked by prefix.PrefixTrie (each distinct prefix run once,
its K/V kept, shared by every sequence that goes through it); longer ones by their own
StreamScorer state (the trie re-walks a sequence on each call)."""
TRIE_BYTES = 256 << 20
"""K/V memory of that trie (~10 KB per distinct prefix for the paper-size model): past it, it
starts afresh."""

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

    __slots__ = ("sid", "keys", "recent", "last", "wall", "node", "depth", "slice")

    def __init__(self, sid: str, wall: float) -> None:
        self.sid = sid
        self.keys: list[int] = []
        self.node, self.depth, self.slice = 0, 0, 0
        """Where live_prefix.PrefixVerdicts' trie has walked this sequence's keys to."""
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

    def __init__(self, parser: Any, scorer: Any, window: WindowConfig, default_mode: str,
                 net: Any = None) -> None:
        self.parser, self.scorer = parser, scorer
        self.net = net
        """The network StreamScorer runs (a lean.LeanLlama), when it is not scorer.model."""
        self.window, self.default_mode = window, default_mode
        self.tracker: Tracker | None = None
        self.mode: str | None = None
        self.keys = 0
        overlap = getattr(scorer, "overlap", None)  # a scorer without slices: whole prefixes
        self.prefixes = PrefixVerdicts(slices=(getattr(scorer, "context", None), overlap)
                                       if overlap else (None, 0))
        """Verdicts by key prefix (per slice past the first): a prefix seen before is answered
        without the model."""
        self._streamer: Any = None
        """stream.StreamScorer: each open sequence's KV cache (or LSTM state), fed only new keys."""
        self._trie: Any = None
        """prefix.PrefixTrie for short sequences (llama on CPU), made with the StreamScorer."""

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
            where = tracker.assign(rec, ev.key, ev.template, wall)
            v = LineVerdict(rec.source, rec.lineno, rec.text, ev.key, ev.template, k=self.scorer.k)
            if where is not None:
                v.sid, v.context = where[0].sid, list(where[0].recent)[:-1]
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
        # what the prefix trie knows is answered; the rest goes to the model from its first unknown
        verdicts: dict[int, tuple[int, list[Any]]] = {}
        jobs = []
        for s, lo, hi in upto.values():
            nodes = self.prefixes.nodes(s, lo, hi)
            known, miss = self.prefixes.lookup(nodes)
            if miss == len(nodes):
                verdicts[id(s)] = (lo, known)
            else:
                jobs.append((s, s.keys[: hi + 1], lo, nodes, known, miss))
        stream = self._stream()
        if stream is not None:  # incremental: only the new keys run
            ranked = self._rank(stream, [(s, keys, lo + miss) for s, keys, lo, _, _, miss in jobs])
        else:
            scored = self.scorer.score([Sequence(s.sid, keys) for s, keys, *_ in jobs]) if jobs else []
            ranked = [sc.verdicts[lo + miss:] for (_, _, lo, _, _, miss), sc in zip(jobs, scored, strict=True)]
        for (s, _, lo, nodes, known, miss), vs in zip(jobs, ranked, strict=True):
            self.prefixes.store(nodes[miss:], vs)
            verdicts[id(s)] = (lo, known[:miss] + vs)
        for v, where in zip(out, placed, strict=True):
            if where is None:
                continue
            first, vs = verdicts[id(where[0])]
            kv = vs[where[1] - first]
            v.rank, v.anomalous, v.kind = kv.rank, kv.anomalous, kv.kind
            v.candidates = [(k, p, template_of(k)) for k, p in kv.candidates]
        self.keys += len(out)
        return out

    def _rank(self, stream: Any, jobs: list[tuple[_Open, list[int], int]]) -> list[list[Any]]:
        """Verdicts for keys[start:] of each (sequence, keys, start): short sequences from the
        prefix trie, long ones from their stream state."""
        trie = self._trie
        short = [i for i, (_, keys, _) in enumerate(jobs) if trie is not None and len(keys) <= TRIE_KEYS]
        out: list[list[Any]] = [[] for _ in jobs]
        if short:
            from .verdicts import key_verdict

            k = self.scorer.k
            got = trie.rank([jobs[i][1] for i in short])
            for i, (ranks, cands) in zip(short, got, strict=True):
                _, keys, start = jobs[i]
                out[i] = [key_verdict(keys[p], ranks[p], k, cands.get(p)) for p in range(start, len(keys))]
        taken = set(short)
        rest = [i for i in range(len(jobs)) if i not in taken]
        if rest:
            for i, vs in zip(rest, stream.rank([jobs[i] for i in rest]), strict=True):
                out[i] = vs
        return out

    def _stream(self) -> Any:
        """A stream.StreamScorer over the scorer's model (CPU), made once; None: re-run prefixes."""
        if self._streamer is None:
            self._streamer = False
            model = self.net if self.net is not None else getattr(self.scorer, "model", None)
            device = getattr(self.scorer, "device", None)
            if model is not None and getattr(device, "type", "cpu") == "cpu":
                from .stream import StreamScorer

                self._streamer = StreamScorer(
                    model, self.scorer.n_keys, self.scorer.k, self.scorer.n_candidates,
                    context=self.scorer.context, overlap=getattr(self.scorer, "overlap", None),
                    slice_keys=self.scorer.context, all_candidates=self.scorer.all_candidates)
                if self._streamer.kind == "llama" and not self.scorer.all_candidates:
                    from .prefix import PrefixTrie

                    self._trie = PrefixTrie(self._streamer.net, self.scorer.n_keys, self.scorer.k,
                                            self.scorer.n_candidates, max_bytes=TRIE_BYTES,
                                            context=self._streamer.context,
                                            overlap=self._streamer.overlap)
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


__all__ = ["Engine", "LineVerdict", "LiveScorer", "Tracker"]
