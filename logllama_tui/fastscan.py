"""The two-core `scan`: this process reads, parses and windows; child processes score.

Parsing (drain3 masking) and scoring (the model) each fill a core, so they run side by side: the
parent never imports torch or transformers (seconds saved), streams each finished sequence's key
tuple to the workers (`python -m logllama_tui.fastscan`, torch threads = 1 each; two, so a burst of
sequences closing at once, as sessions do at the end of a file, uses both cores), and turns the
ranks that come back into the same verdicts `Scorer` gives. The worker runs the lean llama forward (lean.py)
over distinct tuples in sorted lanes that share prefixes (prefix.LaneScorer). The two talk through
pipes in length-prefixed JSON frames: nothing is pickled.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import IO, Any

from logllama_tui.config import EOS, UNK
from logllama_tui.errors import LogLlamaError
from logllama_tui.records import Sequence
from logllama_tui.verdicts import Candidates
from logllama_tui.verdicts import KeyVerdict as Verdict
from logllama_tui.verdicts import ScoredSequence as Scored

IN_FLIGHT = 3
"""Buffers sent and not yet answered before the parser waits for the scorer."""
CACHE_KEYS = 2_000_000
"""Bound on the keys of the remembered ranked tuples (as Scorer's cache)."""


Ranked = tuple[list[int], dict[int, Candidates]]


def verdicts(seq: Sequence, ranked: Ranked, k: int, score_end: bool = True) -> Scored:
    """A Scored from ranks, exactly as Scorer._verdicts builds a ScoredSequence."""
    ranks, cands = ranked
    out: list[Verdict] = []
    for i, (key, rank) in enumerate(zip([*seq.keys, EOS], ranks, strict=True)):
        if key != UNK and rank < k:
            out.append(Verdict(key, rank, False))
            continue
        kind = "unseen" if key == UNK else "rank"
        out.append(Verdict(key, rank, True, kind, list(cands.get(i, []))))
    end = out.pop()
    if not score_end:
        end.anomalous, end.kind = False, None
    return Scored(seq, out, end, end.anomalous or any(v.anomalous for v in out))


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
            [sys.executable, "-m", "logllama_tui.fastscan", model_path, str(k), str(n_candidates),
             device], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
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
            cands[i][j] = [(int(c), float(p)) for c, p in cs]
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


def score_stream(seqs: Iterable[Sequence], workers: list[ScoreWorker], k: int, buffer: int = 1024,
                 in_flight: int = IN_FLIGHT) -> Iterator[list[Scored]]:
    """Scored buffers, in input order, while the workers score ahead of the parser.

    Each buffer's new distinct tuples are sorted and cut into one contiguous share per worker
    (neighbours share prefixes), so a burst (session windows all close at the end of a file)
    keeps every worker busy while this process waits.
    """
    cache: OrderedDict[tuple[int, ...], Ranked] = OrderedDict()
    held = 0
    asked: set[tuple[int, ...]] = set()
    built: dict[tuple[int, ...], Scored] = {}
    pending: deque[tuple[list[Sequence], list[tuple[ScoreWorker, list[tuple[int, ...]]]]]] = deque()

    def submit(batch: list[Sequence]) -> None:
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


# -- child side -------------------------------------------------------------------------------
def worker_main(argv: list[str]) -> int:
    """`python -m logllama_tui.fastscan MODEL K N_CANDIDATES DEVICE`: rank tuples from stdin."""
    import torch

    out, inp = sys.stdout.buffer, sys.stdin.buffer
    try:
        path, k, n_cand, device = argv[0], int(argv[1]), int(argv[2]), argv[3]
        torch.set_num_threads(1)  # the other core parses
        rank, hello = _open_ranker(path, k, n_cand, device)
        write_frame(out, {"hello": hello})
        while (frame := read_frame(inp)) is not None:
            got = rank([tuple(t) for t in frame["seqs"]])
            cands = [[i, j, [[c, round(p, 6)] for c, p in cs]]
                     for i, (_, cd) in enumerate(got) for j, cs in cd.items()]
            write_frame(out, {"ranks": [r for r, _ in got], "cands": cands})
    except Exception as exc:  # noqa: BLE001 - the parent shows it as a clear error
        from logllama_tui.errors import LogLlamaError as Known

        msg = str(exc) if isinstance(exc, Known) else f"{type(exc).__name__}: {exc}"
        try:
            write_frame(out, {"error": msg})
        except OSError:
            pass
        return 1
    return 0


def _open_ranker(path: str, k: int, n_cand: int, device: str) -> tuple[Any, dict[str, Any]]:
    """The fastest ranker this checkpoint and device allow, and a description of it."""
    from logllama_tui.lean import LeanLlama, load_lean
    from logllama_tui.scoring import Scorer, pick_device

    dev = pick_device(device)
    net: Any = None
    meta: dict[str, Any] = {}
    if dev.type == "cpu":
        try:
            net, meta = load_lean(path)
        except ValueError:
            net = None
    if isinstance(net, LeanLlama):
        from logllama_tui.prefix import LaneScorer

        lanes = LaneScorer(net, meta["n_keys"], k, n_cand)
        return lanes.rank, {"device": "cpu", "engine": "lean llama, shared-prefix lanes", **_desc(meta)}
    if net is None:
        from logllama_tui.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, str(dev))
        net, meta = ckpt.model, ckpt.meta
    scorer = Scorer(net, meta["n_keys"], k, device=dev, n_candidates=n_cand, cache_keys=0)

    def rank(tuples: list[tuple[int, ...]]) -> list[Ranked]:
        scored = scorer.score([Sequence("", list(t)) for t in tuples])
        return [([v.rank for v in (*s.verdicts, s.end)],
                 {j: v.candidates for j, v in enumerate((*s.verdicts, s.end)) if v.candidates})
                for s in scored]

    return rank, {"device": str(dev), "engine": "Scorer", **_desc(meta)}


def _desc(meta: dict[str, Any]) -> dict[str, Any]:
    return {"arch": meta.get("arch", "?"), "n_keys": meta.get("n_keys", "?")}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(worker_main(sys.argv[1:]))


__all__ = ["Scored", "ScoreWorker", "Verdict", "read_frame", "score_stream", "verdicts",
           "worker_main", "write_frame"]
