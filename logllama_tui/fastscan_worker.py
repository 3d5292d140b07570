"""The scoring process of the two-core `scan` (`python -m logllama_tui.fastscan_worker MODEL K
N_CANDIDATES DEVICE`): frames in on stdin, ranks out on stdout (protocol: logllama_tui.fastscan).

A frame is {"grow": [[tag, keys...]...], "drop": [tags]} (what open sequences gained, which
closed: nothing is answered) or {"seqs": [tuples]} (closed tuples: answered in order with their
ranks and candidates). Grows are read ahead on a thread and run when nothing else waits, so a
worker that falls behind the parser runs bigger batches instead of a queue of small ones.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import IO, Any

from logllama_tui.fastscan import Ranked, read_frame, write_frame
from logllama_tui.records import Sequence


def worker_main(argv: list[str]) -> int:
    """`python -m logllama_tui.fastscan MODEL K N_CANDIDATES DEVICE`: rank tuples from stdin."""
    import torch

    out, inp = sys.stdout.buffer, sys.stdin.buffer
    try:
        path, k, n_cand, device = argv[0], int(argv[1]), int(argv[2]), argv[3]
        torch.set_num_threads(1)  # the other core parses
        engine, hello = _open_engine(path, k, n_cand, device)
        write_frame(out, {"hello": hello})
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # read ahead: grows pile up, not the pipe
        threading.Thread(target=_pump, args=(inp, inbox), name="scan-frames", daemon=True).start()
        while (frame := inbox.get()) is not None:
            if "grow" in frame:
                for tag, *keys in frame["grow"]:
                    engine.grow(tag, keys)
                for tag in frame["drop"]:
                    engine.drop(tag)
                if inbox.empty():  # run when nothing waits: a late worker runs bigger batches
                    engine.run()
                continue
            got = engine.rank([tuple(t) for t in frame["seqs"]])
            cands = [[i, j, [[c, p] for c, p in cs]]  # full floats: a rounding here would round twice
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


def _pump(inp: IO[bytes], inbox: queue.SimpleQueue[Any]) -> None:
    while True:
        frame = read_frame(inp)
        inbox.put(frame)
        if frame is None:
            return


class _ScorerEngine:
    """Scorer behind the trie's interface: ranks at the close only (grows are ignored)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def grow(self, tag: int, keys: list[int]) -> None:
        """Not used: Scorer ranks whole tuples."""

    def drop(self, tag: int) -> None:
        """Not used."""

    def run(self) -> None:
        """Nothing queued."""

    def rank(self, tuples: list[tuple[int, ...]]) -> list[Ranked]:
        scored = self.scorer.score([Sequence("", list(t)) for t in tuples])
        return [([v.rank for v in (*s.verdicts, s.end)],
                 {j: v.candidates for j, v in enumerate((*s.verdicts, s.end)) if v.candidates})
                for s in scored]


def _open_engine(path: str, k: int, n_cand: int, device: str) -> tuple[Any, dict[str, Any]]:
    """The fastest engine this checkpoint and device allow, and a description of it."""
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
        from logllama_tui.prefix import PrefixTrie

        trie = PrefixTrie(net, meta["n_keys"], k, n_cand)
        return trie, {"device": "cpu", "engine": "lean llama, prefix trie", "grows": True,
                      "context": trie.context, **_desc(meta)}
    if net is None:
        from logllama_tui.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, str(dev))
        net, meta = ckpt.model, ckpt.meta
    scorer = Scorer(net, meta["n_keys"], k, device=dev, n_candidates=n_cand, cache_keys=0)
    return _ScorerEngine(scorer), {"device": str(dev), "engine": "Scorer", "grows": False,
                                   **_desc(meta)}


def _desc(meta: dict[str, Any]) -> dict[str, Any]:
    return {"arch": meta.get("arch", "?"), "n_keys": meta.get("n_keys", "?")}


__all__ = ["worker_main"]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    status = worker_main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(status)  # skip tearing down torch and the trie's memory (~1 s): the parent waits on it


