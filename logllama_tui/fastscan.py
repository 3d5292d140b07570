"""The two-core `scan`: this process reads, parses and windows; a child process scores.

Parsing (drain3 masking) and scoring (the model) each fill a core, so they run side by side: the
parent never imports torch or transformers (seconds saved). It streams to the worker (`python -m
logllama_tui.fastscan_worker`, torch threads = 1) the keys that open sequences gain as lines arrive
(`Grower`, every TICK_LINES lines) and, when sequences close, their key tuples; the worker keeps a
trie of every distinct prefix with its K/V (prefix.PrefixTrie), runs new prefixes while the parser
goes on, and answers a closed tuple from its nodes (only what it has not seen yet runs). The model
is causal and Scorer's slices are fixed, so a prefix's ranks are final before its sequence closes:
on a file whose sessions all stay open to the end, the scoring is done with the parsing. The parent
turns the ranks into the same verdicts `Scorer` gives. Models the trie cannot run (the LSTM, GPUs,
llama configs the lean forward does not reproduce) get Scorer in two workers instead, fed only at
the close. The processes talk through pipes in length-prefixed JSON frames: nothing is pickled.
"""

from __future__ import annotations

import json
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import IO, Any

from logllama_tui.errors import LogLlamaError
from logllama_tui.records import Sequence
from logllama_tui.verdicts import Candidates, scored
from logllama_tui.verdicts import ScoredSequence as Scored

IN_FLIGHT = 3
"""Buffers sent and not yet answered before the parser waits for the scorer."""
TICK_LINES = 10_000
"""Lines parsed between two reports of what open sequences gained (~0.3 s of parsing)."""
CACHE_KEYS = 2_000_000
"""Bound on the keys of the remembered ranked tuples (as Scorer's cache)."""


Ranked = tuple[list[int], dict[int, Candidates]]


def verdicts(seq: Sequence, ranked: Ranked, k: int, score_end: bool = True) -> Scored:
    """A Scored from ranks, exactly as Scorer builds a ScoredSequence (verdicts.scored)."""
    return scored(seq, ranked[0], ranked[1], k, score_end)


# -- frames ---------------------------------------------------------------------------------
def write_frame(fh: IO[bytes], obj: Any) -> None:
    """One length-prefixed JSON frame."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    fh.write(struct.pack(">I", len(data)) + data)
    fh.flush()


def read_frame(fh: IO[bytes]) -> Any:
    """The next frame, or None at end of stream."""
    head = fh.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    data = fh.read(size)
    if len(data) < size:
        return None
    return json.loads(data)


# -- parent side ------------------------------------------------------------------------------
class ScoreWorker:
    """The scoring child process: `rank(tuples)` sends, `results` yields answers in order."""

    def __init__(self, model_path: str, k: int, n_candidates: int, device: str = "auto") -> None:
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logllama_tui.fastscan_worker", model_path, str(k),
             str(n_candidates), device], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="scan-results", daemon=True)
        self._reader.start()
        self.hello: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            frame = read_frame(self.proc.stdout)
            self.answers.put(frame)
            if frame is None:
                return

    def grow(self, grown: list[list[int]], dropped: list[int]) -> None:
        """Tell a trie worker what open sequences gained ([tag, keys...]) and which closed."""
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, {"grow": grown, "drop": dropped})
        except BrokenPipeError:
            self._fail(None)

    def poll_hello(self) -> dict[str, Any] | None:
        """The worker's description if it has loaded the model, without waiting."""
        if self.hello is None:
            try:
                frame = self.answers.get_nowait()
            except queue.Empty:
                return None
            if frame is None or "error" in frame:
                self._fail(frame)
            self.hello = frame["hello"]
        return self.hello

    def send(self, tuples: list[tuple[int, ...]]) -> None:
        """Ask for the ranks of these tuples (answered in the order asked)."""
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, {"seqs": tuples})
        except BrokenPipeError:
            self._fail(None)

    def receive(self, block: bool = True) -> list[Ranked] | None:
        """The next answer (None when not ready and not blocking)."""
        try:
            frame = self.answers.get(block=block)
        except queue.Empty:
            return None
        if frame is None or "error" in frame:
            self._fail(frame)
        if "hello" in frame:
            self.hello = frame["hello"]
            return self.receive(block)
        cands: list[dict[int, Candidates]] = [{} for _ in frame["ranks"]]
        for i, j, cs in frame["cands"]:
            cands[i][j] = list(map(tuple, cs))  # JSON gave [key, prob] pairs: ints and floats
        return list(zip(frame["ranks"], cands, strict=True))

    def wait_ready(self) -> dict[str, Any]:
        """Block until the worker has loaded the model; its description."""
        while self.hello is None:
            frame = self.answers.get()
            if frame is None or "error" in frame:
                self._fail(frame)
            self.hello = frame.get("hello")
        return self.hello

    def _fail(self, frame: Any) -> None:
        self.close()
        if not (frame and "error" in frame):  # a broken pipe: the worker may have said why
            self._reader.join(timeout=5)
            while not self.answers.empty():
                frame = self.answers.get()
                if frame and "error" in frame:
                    break
        if frame and "error" in frame:
            raise LogLlamaError(frame["error"])
        self.err.seek(0)
        tail = self.err.read().decode(errors="replace").strip().splitlines()[-3:]
        raise LogLlamaError("the scoring process stopped: " + (" | ".join(tail) or "no message"))

    def close(self) -> None:
        """End the child (it exits when its input closes)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.err.close()


class Grower:
    """Sends a trie worker the keys open sequences gained since the last tick, and their closes."""

    def __init__(self, worker: ScoreWorker) -> None:
        self.worker = worker
        self.live: dict[str, list[Any]] = {}
        """sid -> [its open Sequence, tag, keys seen at the last tick]."""
        self.dropped: list[int] = []
        self._tags = 0
        self.active = True
        """False once the worker says it does not grow (a Scorer engine)."""

    def tick(self, touched: Iterable[Sequence]) -> None:
        """`touched`: open sequences, most recently fed first (stops at the first one unchanged)."""
        hello = self.worker.poll_hello()
        if hello is not None and not hello.get("grows"):
            self.active = False
        if not self.active:
            return
        limit = (hello or {}).get("context") or 1 << 62  # keys past the trie's depth are not sent
        grown = []
        for seq in touched:
            st = self.live.get(seq.sid)
            if st is None or st[0] is not seq:
                if st is not None:
                    self.dropped.append(st[1])
                st = self.live[seq.sid] = [seq, self._tags, 0]
                self._tags += 1
            n = len(seq.keys)
            if n == st[2]:
                break  # the sessions fed before the last tick all lie behind this one
            lo, hi = min(st[2], limit), min(n, limit)
            if hi > lo:
                grown.append([st[1], *seq.keys[lo:hi]])
            st[2] = n
        if grown or self.dropped:
            self.worker.grow(grown, self.dropped)
            self.dropped = []

    def closed(self, seqs: Iterable[Sequence]) -> Iterator[Sequence]:
        """Pass finished sequences on, noting the closes of the ones that were growing."""
        for seq in seqs:
            st = self.live.get(seq.sid)
            if st is not None and st[0] is seq:
                del self.live[seq.sid]
                self.dropped.append(st[1])
            yield seq


def score_stream(seqs: Iterable[Sequence], workers: list[ScoreWorker], k: int, buffer: int = 1024,
                 in_flight: int = IN_FLIGHT, prepare: Any = None) -> Iterator[list[Scored]]:
    """Scored buffers, in input order, while the workers score ahead of the parser.

    Each buffer's new distinct tuples are sorted and cut into one contiguous share per worker
    (neighbours share prefixes), so a burst (session windows all close at the end of a file)
    keeps every worker busy while this process waits. `prepare()` runs before the first buffer
    goes out (it may add workers to the list).
    """
    cache: OrderedDict[tuple[int, ...], Ranked] = OrderedDict()
    held = 0
    asked: set[tuple[int, ...]] = set()
    built: dict[tuple[int, ...], Scored] = {}
    pending: deque[tuple[list[Sequence], list[tuple[ScoreWorker, list[tuple[int, ...]]]]]] = deque()

    def submit(batch: list[Sequence]) -> None:
        nonlocal prepare
        if prepare is not None:
            prepare()
            prepare = None
        todo = sorted(dict.fromkeys(t for t in (tuple(s.keys) for s in batch)
                                    if t not in cache and t not in asked))
        asked.update(todo)
        share = -(-len(todo) // len(workers))
        sent = []
        for w, at in zip(workers, range(0, len(todo), share or 1), strict=False):
            part = todo[at: at + share]
            w.send(part)
            sent.append((w, part))
        pending.append((batch, sent))

    def finish(block: bool) -> list[Scored] | None:
        nonlocal held
        batch, sent = pending[0]
        while sent:
            w, part = sent[0]
            got = w.receive(block)
            if got is None:
                return None
            for t, r in zip(part, got, strict=True):
                cache[t] = r
                held += len(t) + 1
                asked.discard(t)
            sent.pop(0)
        pending.popleft()
        out = []
        for s in batch:
            t = tuple(s.keys)
            cache.move_to_end(t)
            made = built.get(t)
            if made is None:  # identical tuples share one (read-only) verdict list
                made = built[t] = verdicts(s, cache[t], k)
            out.append(Scored(s, made.verdicts, made.end, made.anomalous))
        if len(built) > len(cache):
            built.clear()
        while held > CACHE_KEYS and len(cache) > 1:
            old, _ = cache.popitem(last=False)
            held -= len(old) + 1
        return out

    batch: list[Sequence] = []
    for seq in seqs:
        batch.append(seq)
        if len(batch) >= buffer:
            submit(batch)
            batch = []
            while pending:
                done = finish(block=len(pending) > in_flight)
                if done is None:
                    break
                yield done
    if batch:
        submit(batch)
    while pending:
        done = finish(block=True)
        assert done is not None
        yield done


__all__ = ["Grower", "Ranked", "Scored", "ScoreWorker", "read_frame", "score_stream", "verdicts",
           "write_frame"]
