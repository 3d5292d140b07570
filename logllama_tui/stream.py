"""Incremental (streaming) Top-K scoring for `tail`: keep each stream's state, feed only new keys.

Re-running a sequence's whole prefix for every batch of new lines (what a plain `Scorer.score`
on the prefix does) costs O(n^2) on a long stream. `StreamScorer` keeps per stream what the model
needs to go on: the KV cache of the lean llama forward (lean.py), the (h, c) of the DeepLog LSTM,
and feeds only the keys that arrived since the last step, one chunk per stream, all streams of a
step in one batched pass (ragged chunks and ragged pasts under one attention mask).

Ranks equal `Scorer`'s teacher-forced ones, long sequences included: past a slice (scoring.slicing)
a stream restarts from its last `overlap` inputs exactly where `Scorer._pieces` starts a new slice
(tests/test_stream.py checks equality on ragged chunks over several streams).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from logllama_tui.config import BOS, EOS, FIRST_KEY, PAD, UNK
from logllama_tui.scoring import Candidates, KeyVerdict, model_context, slice_start, slicing
from logllama_tui.verdicts import key_verdict

ROUND_POSITIONS = 4_096
"""Positions (past and new) of the slices run in one batched pass at most (~40 MB of K/V at
paper size); a longer call runs in rounds."""
MAX_CACHED_POSITIONS = 16_384
"""Positions of KV cache kept over all streams (~10 KB each for the paper-size model); the least
recently used streams are dropped beyond it and rebuilt from their keys if they come back."""

Job = tuple[Hashable, Sequence[int], int]
"""(stream, all its keys so far, index of the first key to score): verdicts for keys[start:]."""


def rank_rows(logits: torch.Tensor, targets: torch.Tensor, n_keys: int, k: int,
              n_candidates: int, all_candidates: bool = False,
              ) -> tuple[list[int], dict[int, Candidates]]:
    """Rank of each target among the candidates (as Scorer), and top candidates of flagged rows.

    logits [N, V], targets [N]; rank = candidates (real keys + EOS) scored strictly higher; UNK or
    an unknown id gets n_keys + 1.
    """
    v = logits.shape[-1]
    keep = torch.zeros(v, dtype=torch.bool)
    keep[FIRST_KEY: FIRST_KEY + n_keys] = True
    keep[EOS] = True
    logits = logits.float().masked_fill(~keep, float("-inf"))
    true = logits.gather(-1, targets.clamp(max=v - 1).unsqueeze(-1))  # [N, 1]
    ranks = (logits > true).sum(-1)
    unseen = (targets == UNK) | (targets >= FIRST_KEY + n_keys) | ~torch.isfinite(true[:, 0])
    ranks = torch.where(unseen, torch.full_like(ranks, n_keys + 1), ranks)
    flagged = torch.ones_like(unseen) if all_candidates else (ranks >= k) | unseen
    cands: dict[int, Candidates] = {}
    if n_candidates > 0 and bool(flagged.any()):
        rows = flagged.nonzero(as_tuple=True)[0]
        top = torch.softmax(logits[rows], dim=-1).topk(min(n_candidates, n_keys + 1), dim=-1)
        for r, ps, ks in zip(rows.tolist(), top.values.tolist(), top.indices.tolist(), strict=True):
            cands[r] = [(key, p) for key, p in zip(ks, ps, strict=True) if p > 0.0]
    return ranks.tolist(), cands


@dataclass(slots=True)
class _State:
    """One stream: where its current context slice starts, how far it has been fed, its cache."""

    start: int
    """Input index (BOS = 0) where the current slice begins (0 until the context overflows)."""
    n: int
    """Inputs fed so far (absolute index of the next input)."""
    last: int
    """The last input fed (a cheap check that the caller's keys are the ones we saw)."""
    cache: Any = None
    """llama: KV buffer [layers, 2, 1, H, capacity, D]; LSTM: (h, c); other models: None."""

    @property
    def size(self) -> int:
        """Positions this state holds in memory (for the LRU bound)."""
        if isinstance(self.cache, torch.Tensor):
            return int(self.cache.shape[4])
        return 1


@dataclass(slots=True)
class _Segment:
    """One stream's work in one slice: feed inputs [fed, end), score targets [score, end)."""

    job: int
    state: _State
    fed: int
    score: int
    end: int
    kept: bool = True
    """Its state is the stream's state after this call (False: an earlier slice of a long chunk)."""


class StreamScorer:
    """Per-stream incremental ranks: `rank(jobs)` scores each stream's new keys in one batched pass."""

    def __init__(self, model: Any, n_keys: int, k: int, n_candidates: int = 5, *,
                 context: int | None = None, overlap: int | None = None,
                 slice_keys: int | None = None, all_candidates: bool = False,
                 max_cached: int = MAX_CACHED_POSITIONS, lean: bool = True) -> None:
        from logllama_tui.lean import LeanLlama, supported_config
        from logllama_tui.model import DeepLogLSTM

        self.model, self.n_keys, self.k = model, n_keys, k
        self.n_candidates, self.all_candidates = n_candidates, all_candidates
        context = context if context is not None else model_context(model)
        self.max_cached = max_cached
        self.net: Any = model
        self.kind = "full"
        """llama (lean KV cache), lstm ((h, c) carried) or full (re-run the slice: any other model)."""
        if isinstance(model, LeanLlama):
            self.kind = "llama"
        elif isinstance(model, DeepLogLSTM):
            self.kind = "lstm"
        elif lean and hasattr(model, "config") and supported_config(model.config.to_dict()):
            self.net, self.kind = LeanLlama.from_hf(model), "llama"
        if self.kind == "llama" and context is None:
            context = self.net.max_positions
        if self.kind == "lstm":
            context = None  # an LSTM carries its state: no slices, exactly as Scorer
        self.context, self.overlap = slicing(context, overlap, slice_keys)
        """Slice length and the inputs a restart repeats: the same as Scorer's for this model."""
        if hasattr(model, "eval"):
            model.eval()
        self.states: OrderedDict[Hashable, _State] = OrderedDict()
        self._held = 0
        self.forward_keys = 0
        """Inputs run through the network (restarts and rebuilds included): for speed reports."""

    # -- public ---------------------------------------------------------------------------
    def rank(self, jobs: Sequence[Job]) -> list[list[KeyVerdict]]:
        """Verdicts for keys[start:] of each job, given all its keys before (one job per stream).

        Every slice a chunk reaches goes into the same batched pass (a later slice restarts from
        keys the caller gave, so it needs nothing from the slice before), in rounds of at most
        ROUND_POSITIONS positions so that a huge chunk does not hold all its slices' K/V at once.
        """
        out: list[list[KeyVerdict]] = [[] for _ in jobs]
        segs = [g for j, job in enumerate(jobs) if job[2] < len(job[1])
                for g in self._segments(j, job)]
        kept = [g.state for g in segs if g.kept]
        before = sum(st.size for st in kept)
        batch: list[_Segment] = []
        room = ROUND_POSITIONS
        for g in segs:  # a job's slices in order: its verdicts are appended in order
            need = g.end - (g.fed if self.kind == "lstm" else g.state.start)  # (h, c): no past
            if batch and need > room:
                self._run(batch, jobs, out)
                batch, room = [], ROUND_POSITIONS
            batch.append(g)
            room -= need
        if batch:
            self._run(batch, jobs, out)
        self._held += sum(st.size for st in kept) - before
        self._evict()
        return out

    def rewind(self, stream: Hashable, keys: Sequence[int], n: int) -> None:
        """Keep only the first n inputs of a stream's state: the caller vouches that `keys` starts
        with the keys that state was fed (a sorted scan reuses the shared prefix of the last one)."""
        st = self.states.get(stream)
        if st is not None and self.kind == "llama" and st.start < n < st.n:
            st.n, st.last = n, _input(keys, n - 1)

    def forget(self, stream: Hashable) -> None:
        """Drop a stream's state (its sequence closed)."""
        st = self.states.pop(stream, None)
        if st is not None:
            self._held -= st.size

    def reset(self) -> None:
        """Drop every stream's state."""
        self.states.clear()
        self._held = 0

    # -- planning ---------------------------------------------------------------------------
    def piece_start(self, p: int) -> int:
        """Input index where the slice that scores position p begins (Scorer._pieces' cut)."""
        return slice_start(p, self.context, self.overlap)

    def _segments(self, j: int, job: Job) -> list[_Segment]:
        """The slices job j's new keys fall in: the first goes on from the stream's state when it
        matches, each later one starts afresh; the last one's state becomes the stream's."""
        stream, keys, s = job
        start = self.piece_start(s)
        st = self.states.pop(stream, None)
        if st is not None:
            self._held -= st.size
        if (st is None or st.start != start or st.n > s
                or (st.n > start and _input(keys, st.n - 1) != st.last)):
            st = _State(start, start, -1)
        segs = []
        while True:
            end = len(keys) if self.context is None else min(len(keys), start + self.context)
            segs.append(_Segment(j, st, st.n, s, end, kept=end >= len(keys)))
            if end >= len(keys):
                break
            s, start = end, self.piece_start(end)
            st = _State(start, start, -1)
        self.states[stream] = st
        self._held += st.size
        return segs

    def _evict(self) -> None:
        while self._held > self.max_cached and len(self.states) > 1:
            _, st = self.states.popitem(last=False)
            self._held -= st.size

    # -- running ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self, segs: list[_Segment], jobs: Sequence[Job], out: list[list[KeyVerdict]]) -> None:
        inputs = [[_input(jobs[g.job][1], p) for p in range(g.fed, g.end)] for g in segs]
        if self.kind == "llama":
            logits = self._llama(segs, inputs)
        elif self.kind == "lstm":
            logits = self._lstm(segs, inputs)
        else:
            logits = self._full(segs, jobs)
        rows, targets, where = [], [], []
        for b, g in enumerate(segs):
            keys = jobs[g.job][1]
            for p in range(g.score, g.end):
                rows.append((b, p - g.fed))
                targets.append(keys[p])
                where.append(g.job)
            self.forward_keys += g.end - g.fed
            g.state.n, g.state.last = g.end, inputs[b][-1]
        picked = logits[torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])]
        ranks, cands = rank_rows(picked, torch.tensor(targets), self.n_keys, self.k,
                                 self.n_candidates, self.all_candidates)
        for i, (key, rank, j) in enumerate(zip(targets, ranks, where, strict=True)):
            out[j].append(key_verdict(key, rank, self.k, cands.get(i)))

    def _llama(self, segs: list[_Segment], inputs: list[list[int]]) -> torch.Tensor:
        """One batched cached pass: each row's past from its own buffer, new K/V written back."""
        net = self.net
        pasts = [g.fed - g.state.start for g in segs]
        lens = [len(x) for x in inputs]
        for g, past, n in zip(segs, pasts, lens, strict=True):
            if g.kept or len(segs) == 1:  # an earlier slice of a long chunk is not kept
                self._reserve(g.state, past + n)
        if len(segs) == 1:  # the busy-stream case: attend straight over the stream's buffer
            st = segs[0].state
            ids = torch.tensor([inputs[0]])
            pos = torch.arange(pasts[0], pasts[0] + lens[0]).unsqueeze(0)
            return net(ids, pos, st.cache, pasts[0])
        width = max(lens)
        kv = net.kv_buffer(len(segs), max(p + n for p, n in zip(pasts, lens, strict=True)))
        for b, (g, past) in enumerate(zip(segs, pasts, strict=True)):
            if past:
                kv[:, :, b, :, :past] = g.state.cache[:, :, 0, :, :past]
        # rows packed end to end, attention per (past, length) group: padding cost nothing (a
        # padded batch with one mask spent most of a 32-lane scan step on padding)
        ids = torch.tensor([x for row in inputs for x in row])
        pos = torch.tensor([p + j for p, n in zip(pasts, lens, strict=True) for j in range(n)])
        flat = net.packed(ids, pos, kv, list(zip(pasts, lens, strict=True)))  # [T, V]
        rows = torch.tensor([b for b, n in enumerate(lens) for _ in range(n)])
        cols = torch.tensor([j for n in lens for j in range(n)])
        logits = flat.new_zeros(len(segs), width, flat.shape[-1])
        logits[rows, cols] = flat
        for b, (g, past, n) in enumerate(zip(segs, pasts, lens, strict=True)):
            if g.kept:
                g.state.cache[:, :, 0, :, past:past + n] = kv[:, :, b, :, past:past + n]
        return logits

    def _reserve(self, st: _State, need: int) -> None:
        """Grow a stream's KV buffer to hold `need` positions (doubling, up to the context)."""
        have = st.size if isinstance(st.cache, torch.Tensor) else 0
        if have >= need:
            return
        cap = max(need, min(2 * have, self.context or need), 16)
        buf = self.net.kv_buffer(1, cap)
        if have:
            buf[:, :, :, :, :have] = st.cache
        st.cache = buf  # rank() counts the growth of the streams' states in _held

    def _lstm(self, segs: list[_Segment], inputs: list[list[int]]) -> torch.Tensor:
        """Carry (h, c): pack the ragged chunks, start each row from its stream's state."""
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        net = self.net
        lens = [len(x) for x in inputs]
        ids = torch.full((len(segs), max(lens)), PAD, dtype=torch.long)
        for b, x in enumerate(inputs):
            ids[b, : len(x)] = torch.tensor(x)
        zeros = torch.zeros(net.layers, 1, net.hidden)
        h0 = torch.cat([g.state.cache[0] if g.state.cache else zeros for g in segs], dim=1)
        c0 = torch.cat([g.state.cache[1] if g.state.cache else zeros for g in segs], dim=1)
        packed = pack_padded_sequence(net.embed(ids), lens, batch_first=True, enforce_sorted=False)
        y, (h, c) = net.lstm(packed, (h0, c0))
        y, _ = pad_packed_sequence(y, batch_first=True)
        for b, g in enumerate(segs):
            g.state.cache = (h[:, b: b + 1].clone(), c[:, b: b + 1].clone())
        return net.head(y)

    def _full(self, segs: list[_Segment], jobs: Sequence[Job]) -> torch.Tensor:
        """Any other model: re-run each stream's slice up to the new keys (correct, not fast)."""
        seqs = [[_input(jobs[g.job][1], p) for p in range(g.state.start, g.end)] for g in segs]
        width = max(len(x) for x in seqs)
        ids = torch.full((len(segs), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(segs), width), dtype=torch.long)
        for b, x in enumerate(seqs):
            ids[b, : len(x)], mask[b, : len(x)] = torch.tensor(x), 1
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        # realign so that column (p - fed) is position p, as the cached paths return
        shift = [g.fed - g.state.start for g in segs]
        return torch.stack([logits[b, s: s + width] if s + width <= logits.shape[1]
                            else torch.nn.functional.pad(logits[b, s:], (0, 0, 0, s + width - logits.shape[1]))
                            for b, s in enumerate(shift)])


def _input(keys: Sequence[int], p: int) -> int:
    """Input at index p of the framed sequence BOS k1..kn (-1 before the start)."""
    if p < 0:
        return -1
    return BOS if p == 0 else keys[p - 1]


__all__ = ["MAX_CACHED_POSITIONS", "StreamScorer", "rank_rows"]
