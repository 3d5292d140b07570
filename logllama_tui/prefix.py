"""Shared-prefix scoring for `scan`: each distinct tuple once, and shared prefixes once per lane.

Logs repeat themselves: on HDFS_dev.log x 3 the 475k scored positions (keys + ends) come from 1,834
distinct tuples holding 57k distinct prefixes. `LaneScorer` sorts a buffer's distinct tuples and
cuts them into lanes; in sorted order a tuple shares its longest common prefix with the one before
it, so a lane rewinds its KV cache to that prefix and feeds only the rest (60k positions run
instead of 475k). All lanes advance together, one batched StreamScorer pass per step, so ranks are
the teacher-forced ones (tests/test_fastscan.py), long tuples past the context included.

Tried and dropped: a trie run with tree attention (each node attends to its ancestors): dense
attention over the sub-trie and re-run ancestors made it 2-3x slower than the lanes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch

from logllama_tui.config import EOS
from logllama_tui.scoring import Candidates

Ranked = tuple[list[int], dict[int, Candidates]]
"""Ranks of k1..kn and EOS, and the candidates of flagged positions (by position)."""


class LeanAsHF:
    """A LeanLlama called like a transformers model (`model(input_ids, attention_mask).logits`)."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.config = SimpleNamespace(max_position_embeddings=net.max_positions)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **_: Any) -> SimpleNamespace:
        """Causal logits; right padding is harmless (real positions never look right)."""
        b, n = input_ids.shape
        return SimpleNamespace(logits=self.net(input_ids, torch.arange(n).expand(b, n)))

    def eval(self) -> LeanAsHF:
        return self

    def parameters(self) -> Any:
        yield self.net.embed


class LaneScorer:
    """Distinct sequences sorted and cut into lanes; each lane reuses the KV cache of its last one.

    In sorted order a sequence shares its longest common prefix with the one before it, so a lane
    only feeds what differs (the trie's new nodes, without tree attention); all lanes advance
    together, one batched StreamScorer pass per step.
    """

    def __init__(self, net: Any, n_keys: int, k: int, n_candidates: int = 5, lanes: int = 32) -> None:
        from logllama_tui.stream import StreamScorer

        self.stream = StreamScorer(net, n_keys, k, n_candidates, max_cached=1 << 30)
        self.lanes = max(1, lanes)

    @property
    def forward_keys(self) -> int:
        return self.stream.forward_keys

    def rank(self, tuples: Sequence[Sequence[int]]) -> list[Ranked]:
        """(ranks of k1..kn and EOS, candidates) for each distinct key tuple, in order."""
        order = sorted(range(len(tuples)), key=lambda i: tuple(tuples[i]))
        per = -(-len(order) // self.lanes) if order else 0
        runs = [order[at: at + per] for at in range(0, len(order), per)] if per else []
        out: list[Ranked] = [([], {}) for _ in tuples]
        prev: list[int | None] = [None] * len(runs)
        for step in range(per):
            jobs, owners, shared = [], [], []
            for lane, run in enumerate(runs):
                if step >= len(run):
                    continue
                i = run[step]
                ext = [*tuples[i], EOS]
                m = 0
                if prev[lane] is not None:
                    m = _lcp(tuples[i], tuples[prev[lane]])  # type: ignore[index]
                    self.stream.rewind(lane, ext, m)
                jobs.append((lane, ext, m))
                owners.append((lane, i, m))
                shared.append(prev[lane])
            for (lane, i, m), before, verdicts in zip(owners, shared, self.stream.rank(jobs),
                                                       strict=True):
                ranks, cands = out[i]
                if before is not None and m:
                    ranks += out[before][0][:m]
                    cands.update({j: c for j, c in out[before][1].items() if j < m})
                for j, v in enumerate(verdicts, start=m):
                    ranks.append(v.rank)
                    if v.candidates:
                        cands[j] = v.candidates
                prev[lane] = i
        self.stream.reset()
        return out


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


__all__ = ["LaneScorer", "LeanAsHF", "Ranked"]
