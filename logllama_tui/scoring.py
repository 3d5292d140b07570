"""Top-K detection: rank every key of a sequence among the model's predicted next keys.

A sequence `k1..kn` is fed as `BOS k1..kn` with targets `k1..kn EOS`, one teacher-forced forward
pass per distinct sequence, batched across sequences of similar length. The rank of the true key
is the number of candidates (real keys and EOS) whose logit is strictly greater than its own; a key
is anomalous when its rank is >= K or it is UNK (a template never seen in training).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from logllama_tui.config import BOS, EOS, FIRST_KEY, PAD, UNK
from logllama_tui.errors import BadInput
from logllama_tui.records import Sequence
from logllama_tui.resolve import (  # re-exported: they need no torch
    default_model_for,
    resolve_k,
    slice_start,
)
from logllama_tui.verdicts import Candidates, KeyVerdict, ScoredSequence, scored

SCORE_SLICE = 128
"""Most inputs (BOS and keys) one slice scores, and at most the model's context. A longer sequence
is scored slice by slice, each slice restarting from the last eighth of the one before (16 inputs),
so every key sees 16-127 keys of history. Against slices of the paper model's whole context (512)
restarting from its last half, a key past the first slice runs ~1.14 times instead of ~2 and
attends over 16-127 positions instead of 256-511: one busy stream past the context went from
2,035 to 5,512 keys/s here in one run (BENCHMARKS.md, speed: attention with 6-wide heads costs ~3 ns
per score on this CPU and was two thirds of the time). The model trains on chunks that start with
no history at all (batching.frame), so this much history is within what it has learned; on BGL's
long 60 s windows 10 of 44,234 ranks of normal keys past the first slice changed and no window's
verdict did (benchmarks/bench_slices.py). An LSTM has no slices: its history is unbounded."""


def slicing(context: int | None, overlap: int | None = None,
            longest: int | None = None) -> tuple[int | None, int]:
    """(slice length, inputs each later slice repeats from the one before) for a model context
    (None: unbounded, one slice per sequence); slices of `longest` (SCORE_SLICE) at most."""
    if context is None:
        return None, 0
    span = min(context, longest or SCORE_SLICE)
    keep = max(1, span // 8) if overlap is None else overlap
    if not 1 <= keep < span:
        raise BadInput(f"slice overlap {keep} must be between 1 and {span - 1}")
    return span, keep


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda, mps or cpu; a named device that is not there -> BadInput."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda but CUDA is not available here: use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise BadInput("--device mps but MPS is not available here: use --device cpu or auto")
    return torch.device(name)


def model_context(model: Any) -> int | None:
    """The longest input the model takes (None: unbounded, e.g. an LSTM)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "max_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    return None


@dataclass(slots=True)
class _Piece:
    """One forward-pass input: a slice of a framed sequence and which of its positions count."""

    owner: int
    start: int
    """Offset of this slice in the framed input (BOS k1..kn)."""
    inputs: list[int]
    targets: list[int]
    first_scored: int
    """Positions before this one only give context (they were scored by the previous slice)."""


@dataclass(slots=True)
class _Ranked:
    """Cached result for one distinct key tuple: a rank per target and the candidates we kept."""

    ranks: list[int]
    candidates: dict[int, Candidates]


class Scorer:
    """Scores sequences with a next-key model: one batched teacher-forced pass per distinct tuple."""

    def __init__(self, model: Any, n_keys: int, k: int, device: str | torch.device = "cpu",
                 batch_size: int = 128, n_candidates: int = 5, *, score_end: bool = True,
                 all_candidates: bool = False, context: int | None = None,
                 overlap: int | None = None, slice_keys: int | None = None,
                 cache_keys: int = 2_000_000) -> None:
        if n_keys < 1:
            raise BadInput("the model knows no log keys: retrain it on data with at least one line")
        if not 1 <= k <= n_keys + 1:
            raise BadInput(f"K={k} is out of range: use 1..{n_keys + 1} for this model")
        self.model = model
        self.n_keys = n_keys
        self.k = k
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.batch_size = max(1, batch_size)
        self.n_candidates = n_candidates
        self.score_end = score_end
        self.all_candidates = all_candidates
        context = context if context is not None else model_context(model)
        if context is not None and context < 2:
            raise BadInput(f"model context {context} is too short to score anything")
        self.context, self.overlap = slicing(context, overlap, slice_keys)
        """Slice length (SCORE_SLICE at most) and the inputs a later slice repeats (see slicing)."""
        self.cache_keys = cache_keys
        """Bound on the keys held by the cache of scored tuples (bounded memory on endless logs)."""
        self._cache: OrderedDict[tuple[int, ...], _Ranked] = OrderedDict()
        self._cached = 0
        self.forward_keys = 0
        """Keys actually run through the model (after the cache): for speed reports."""
        self.scored_keys = 0
        """Keys given a verdict."""
        model.eval()

    # -- public -------------------------------------------------------------------------------
    def score(self, seqs: Iterable[Sequence]) -> list[ScoredSequence]:
        """Verdicts for every key and the end of each sequence, in the order given."""
        seqs = list(seqs)
        ranked = self._rank([tuple(s.keys) for s in seqs])
        out = [self._verdicts(s, ranked[tuple(s.keys)]) for s in seqs]
        self.scored_keys += sum(len(s) for s in seqs)
        return out

    def max_ranks(self, seqs: Iterable[Sequence]) -> list[int]:
        """Each sequence's worst rank (UNK counts as n_keys + 1); the end only when score_end."""
        return [max(keys, end) if self.score_end else keys for keys, end in self.worst_ranks(seqs)]

    def worst_ranks(self, seqs: Iterable[Sequence]) -> list[tuple[int, int]]:
        """(worst rank over the keys, rank of the end) per sequence: verdicts for any K at once."""
        tuples = [tuple(s.keys) for s in seqs]
        ranked = self._rank(tuples)
        self.scored_keys += sum(len(t) for t in tuples)
        return [(max(ranked[t].ranks[:-1], default=0), ranked[t].ranks[-1]) for t in tuples]

    # -- internals ----------------------------------------------------------------------------
    def _verdicts(self, seq: Sequence, ranked: _Ranked) -> ScoredSequence:
        # candidates were kept for flagged positions only (for all with all_candidates)
        return scored(seq, ranked.ranks, ranked.candidates, self.k, self.score_end)

    def _rank(self, tuples: list[tuple[int, ...]]) -> dict[tuple[int, ...], _Ranked]:
        """Rank every distinct tuple not in the cache; return the results for all of them."""
        result: dict[tuple[int, ...], _Ranked] = {}
        todo: list[tuple[int, ...]] = []
        for t in tuples:
            if t in result:
                continue
            hit = self._cache.get(t)
            if hit is not None:
                self._cache.move_to_end(t)
                result[t] = hit
            else:
                result[t] = _Ranked([0] * (len(t) + 1), {})
                todo.append(t)
        if todo:
            pieces = [p for i, t in enumerate(todo) for p in self._pieces(i, t)]
            self._run(pieces, [result[t] for t in todo])
            self.forward_keys += sum(len(t) + 1 for t in todo)
            for t in todo:
                self._cache[t] = result[t]
                self._cached += len(t) + 1
            while self._cached > self.cache_keys and self._cache:
                old, _ = self._cache.popitem(last=False)
                self._cached -= len(old) + 1
        return result

    def _pieces(self, owner: int, keys: tuple[int, ...]) -> list[_Piece]:
        """Frame one tuple; cut it into overlapping slices when it is longer than a slice."""
        inputs = [BOS, *keys]
        targets = [*keys, EOS]
        n, c = len(inputs), self.context
        if c is None or n <= c:
            return [_Piece(owner, 0, inputs, targets, 0)]
        pieces = [_Piece(owner, 0, inputs[:c], targets[:c], 0)]
        pos = c  # first position not scored yet
        while pos < n:
            start = slice_start(pos, c, self.overlap)  # pos - overlap: that much history at least
            end = min(start + c, n)
            pieces.append(_Piece(owner, start, inputs[start:end], targets[start:end], pos - start))
            pos = end
        return pieces

    def _batches(self, pieces: list[_Piece]) -> Iterable[list[_Piece]]:
        """Pieces sorted by length, grouped so padding and attention memory stay small."""
        pieces = sorted(pieces, key=lambda p: len(p.inputs))
        budget = self.batch_size * 64  # tokens per batch: long pieces go in smaller batches
        batch: list[_Piece] = []
        for p in pieces:
            if batch and (len(batch) >= self.batch_size or len(p.inputs) * (len(batch) + 1) > budget):
                yield batch
                batch = []
            batch.append(p)
        if batch:
            yield batch

    @torch.inference_mode()
    def _run(self, pieces: list[_Piece], owners: list[_Ranked]) -> None:
        want_all = self.all_candidates
        for batch in self._batches(pieces):
            width = max(len(p.inputs) for p in batch)
            ids = torch.full((len(batch), width), PAD, dtype=torch.long)
            tgt = torch.full((len(batch), width), PAD, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, p in enumerate(batch):  # right padding
                ids[row, : len(p.inputs)] = torch.tensor(p.inputs)
                tgt[row, : len(p.targets)] = torch.tensor(p.targets)
                mask[row, : len(p.inputs)] = 1
            logits = self.model(input_ids=ids.to(self.device),
                                attention_mask=mask.to(self.device)).logits  # [B, T, V]
            logits = logits.float()
            logits = self._mask_reserved(logits)
            tgt = tgt.to(self.device)
            safe_tgt = tgt.clamp(max=logits.shape[-1] - 1)
            true = logits.gather(-1, safe_tgt.unsqueeze(-1))  # [B, T, 1]
            ranks = (logits > true).sum(-1)  # [B, T]: candidates strictly above the true key
            unseen = (tgt == UNK) | (tgt >= FIRST_KEY + self.n_keys) | ~torch.isfinite(true[..., 0])
            ranks = torch.where(unseen, torch.full_like(ranks, self.n_keys + 1), ranks)
            flagged = (ranks >= self.k) | unseen
            if want_all:
                flagged = torch.ones_like(flagged)
            flagged &= mask.to(self.device).bool()
            ranks_cpu = ranks.cpu().tolist()
            cand_at: dict[tuple[int, int], Candidates] = {}
            if self.n_candidates > 0 and bool(flagged.any()):
                rows, cols = flagged.nonzero(as_tuple=True)
                probs = torch.softmax(logits[rows, cols], dim=-1)  # [N, V]
                top = probs.topk(min(self.n_candidates, self.n_keys + 1), dim=-1)
                vals, idx = top.values.cpu().tolist(), top.indices.cpu().tolist()
                for r, c, v, i in zip(rows.cpu().tolist(), cols.cpu().tolist(), vals, idx,
                                      strict=True):
                    cand_at[(r, c)] = [(k, p) for k, p in zip(i, v, strict=True) if p > 0.0]
            for row, p in enumerate(batch):
                out = owners[p.owner]
                for col in range(p.first_scored, len(p.inputs)):
                    out.ranks[p.start + col] = ranks_cpu[row][col]
                    if (row, col) in cand_at:
                        out.candidates[p.start + col] = cand_at[(row, col)]

    def _mask_reserved(self, logits: torch.Tensor) -> torch.Tensor:
        """PAD, BOS, UNK and any id past the real keys can never be a candidate."""
        v = logits.shape[-1]
        keep = torch.zeros(v, dtype=torch.bool, device=logits.device)
        keep[FIRST_KEY: FIRST_KEY + self.n_keys] = True
        keep[EOS] = True
        return logits.masked_fill(~keep, float("-inf"))


def calibrate_k(model: Any, val_seqs: Iterable[Sequence], n_keys: int, target_fpr: float,
                device: str | torch.device = "cpu", batch_size: int = 128,
                score_end: bool = True) -> int:
    """The smallest K that flags at most `target_fpr` of the normal validation sequences."""
    seqs = [s for s in val_seqs if s.label is not True and len(s) > 0]
    if not seqs:
        raise BadInput("--k auto needs normal validation sequences and there are none: "
                       "give more normal data or a count/fraction for --k")
    if not 0.0 < target_fpr <= 1.0:
        raise BadInput(f"--target-fpr {target_fpr} is out of range: use a value in (0, 1]")
    scorer = Scorer(model, n_keys, n_keys + 1, device, batch_size, n_candidates=0,
                    score_end=score_end)
    return k_for_fpr(scorer.max_ranks(seqs), n_keys, target_fpr)


def k_for_fpr(max_ranks: list[int], n_keys: int, target_fpr: float) -> int:
    """Pick K from each normal sequence's worst rank: flagged at K means max_rank >= K."""
    ordered = sorted(max_ranks, reverse=True)
    allowed = math.floor(target_fpr * len(ordered) + 1e-9)  # sequences we may flag
    if allowed >= len(ordered):
        return 1
    return max(1, min(n_keys + 1, ordered[allowed] + 1))


__all__ = ["SCORE_SLICE", "KeyVerdict", "ScoredSequence", "Scorer", "resolve_k", "calibrate_k",
           "k_for_fpr", "default_model_for", "pick_device", "model_context", "slice_start", "slicing"]
