"""Training data: the seeded split, BOS/EOS framing, de-duplication and length-bucketed batches.

Logs repeat themselves: most HDFS sessions are one of a few hundred key sequences. Identical
training examples are therefore kept once with a weight (their count), and the loss weights each
example by it, which gives exactly the loss of the repeated data at a fraction of the compute.
Batches hold examples of similar length: one long session padded into a batch of short ones
multiplies the cost of the whole batch on a CPU.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from logllama_tui.config import BOS, EOS, PAD
from logllama_tui.records import Sequence


def split_sequences(
    seqs: list[Sequence], train_fraction: float | None, val_fraction: float, seed: int
) -> tuple[list[Sequence], list[Sequence], list[Sequence]]:
    """Seeded (train, val, rest): normal sequences only are drawn; rest keeps the input order.

    train_fraction None draws every normal sequence; val_fraction of the draw is held back for
    validation (at least one when the draw has two or more). Anomalous (label True) sequences
    always land in rest; unlabelled ones (None) count as normal.
    """
    normal = [i for i, s in enumerate(seqs) if s.label is not True]
    random.Random(seed).shuffle(normal)
    n_draw = len(normal) if train_fraction is None else round(len(normal) * train_fraction)
    if train_fraction is not None and train_fraction > 0 and normal:
        n_draw = max(n_draw, 1)
    draw = normal[:n_draw]
    n_val = round(len(draw) * val_fraction)
    if val_fraction > 0 and len(draw) >= 2:
        n_val = min(max(n_val, 1), len(draw) - 1)
    val_idx, train_idx = draw[:n_val], draw[n_val:]
    used = set(draw)
    rest = [s for i, s in enumerate(seqs) if i not in used]
    return [seqs[i] for i in sorted(train_idx)], [seqs[i] for i in sorted(val_idx)], rest


@dataclass(frozen=True)
class Example:
    """One framed training chunk: the model reads `inputs` and predicts `targets` (same length)."""

    inputs: tuple[int, ...]
    targets: tuple[int, ...]
    weight: int = 1
    """How many identical chunks this one stands for."""

    def __len__(self) -> int:
        return len(self.inputs)


def frame(keys: Seq[int], max_len: int) -> list[Example]:
    """[BOS]+keys -> keys+[EOS], cut into aligned chunks of at most max_len positions.

    Every key and the final EOS are predicted exactly once; a later chunk starts from the key
    before its first target instead of BOS (its context is the chunk itself).
    """
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    inputs = (BOS, *keys)  # [n+1]
    targets = (*keys, EOS)  # [n+1]
    return [
        Example(inputs[i: i + max_len], targets[i: i + max_len])
        for i in range(0, len(inputs), max_len)
    ]


def make_examples(seqs: list[Sequence], max_len: int, dedup: bool = True) -> list[Example]:
    """Framed chunks of every sequence, identical chunks merged into one weighted example."""
    chunks = [ex for s in seqs if s.keys for ex in frame(s.keys, max_len)]
    if not dedup:
        return chunks
    counts = Counter(chunks)
    return [Example(ex.inputs, ex.targets, weight=n) for ex, n in counts.items()]


class BucketBatchSampler:
    """Batches of indices into `examples`, similar lengths together, order seeded per epoch.

    `n_batches` (de-duplicated data) makes an epoch as many steps as the repeated data would
    take, cycling over the distinct batches in a fresh seeded order each time round.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, shuffle: bool = True,
                 n_batches: int | None = None):
        self.batch_size, self.seed, self.shuffle, self.epoch = batch_size, seed, shuffle, 0
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        self.batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        self.n_batches = n_batches if n_batches is not None else len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the batch order for `epoch` (deterministic: resume replays it exactly)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        done, lap = 0, 0
        while done < self.n_batches and self.batches:
            batches = list(self.batches)
            if self.shuffle:
                random.Random((self.seed * 1_000_003 + self.epoch) * 1_009 + lap).shuffle(batches)
            yield from batches[: self.n_batches - done]
            done, lap = done + len(batches), lap + 1

    def __len__(self) -> int:
        return self.n_batches


def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask, targets (PAD where ignored) and weights."""
    width = max(len(ex) for ex in examples)
    ids = torch.full((len(examples), width), PAD, dtype=torch.long)  # [B, T]
    targets = torch.full((len(examples), width), PAD, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # [B, T]
    for row, ex in enumerate(examples):
        n = len(ex)
        ids[row, :n] = torch.tensor(ex.inputs)
        targets[row, :n] = torch.tensor(ex.targets)
        mask[row, :n] = 1
    weights = torch.tensor([float(ex.weight) for ex in examples])  # [B]
    return {"input_ids": ids, "attention_mask": mask, "targets": targets, "weights": weights}


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weighted next-key cross-entropies, sum of weighted targets); PAD targets ignored."""
    B, T, V = logits.shape
    ce = torch.nn.functional.cross_entropy(
        logits.float().reshape(B * T, V), targets.reshape(B * T), ignore_index=PAD, reduction="none"
    ).reshape(B, T)  # [B, T], 0 at PAD targets
    counted = (targets != PAD).float() * weights[:, None]  # [B, T]
    return (ce * weights[:, None]).sum(), counted.sum()


__all__ = [
    "BucketBatchSampler", "Example", "collate", "frame", "make_examples", "split_sequences",
    "weighted_loss",
]
