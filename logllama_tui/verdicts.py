"""Verdicts on scored sequences: plain data, no torch, so the parsing process of a scan can use them."""

from __future__ import annotations

from dataclasses import dataclass, field

from logllama_tui.config import EOS, UNK
from logllama_tui.records import Sequence

Candidates = list[tuple[int, float]]


@dataclass(slots=True)
class KeyVerdict:
    """The verdict on one position: the true key, its rank and, when flagged, what was expected."""

    key: int
    rank: int
    """Candidates (real keys + EOS) scored strictly higher than the true key; n_keys + 1 for UNK."""
    anomalous: bool
    kind: str | None = None
    """None (normal), "unseen" (UNK: template never seen in training) or "rank" (rank >= K)."""
    candidates: Candidates = field(default_factory=list)
    """Top few (key, probability), most likely first; filled for anomalous keys unless asked."""


@dataclass(slots=True)
class ScoredSequence:
    """A sequence with one verdict per key and one for its end (the EOS position)."""

    seq: Sequence
    verdicts: list[KeyVerdict]
    end: KeyVerdict
    anomalous: bool

    @property
    def max_rank(self) -> int:
        """The worst rank in the sequence, the end included (what K must exceed to pass it)."""
        return max([v.rank for v in self.verdicts] + [self.end.rank])

    def anomalous_keys(self) -> list[tuple[int, KeyVerdict]]:
        """(index into seq.keys, verdict) of every flagged key (the end excluded)."""
        return [(i, v) for i, v in enumerate(self.verdicts) if v.anomalous]


def key_verdict(key: int, rank: int, k: int, candidates: Candidates | None = None) -> KeyVerdict:
    """The verdict rule: a template never seen in training (UNK) is "unseen", a key ranked at or
    past K is "rank", anything else is normal."""
    kind = "unseen" if key == UNK else "rank" if rank >= k else None
    return KeyVerdict(key, rank, kind is not None, kind, list(candidates) if candidates else [])


def scored(seq: Sequence, ranks: list[int], candidates: dict[int, Candidates], k: int,
           score_end: bool = True) -> ScoredSequence:
    """A ScoredSequence from the ranks of seq's keys and its end (EOS), candidates by position."""
    out = [key_verdict(key, rank, k, candidates.get(i))
           for i, (key, rank) in enumerate(zip([*seq.keys, EOS], ranks, strict=True))]
    end = out.pop()
    if not score_end:
        end.anomalous, end.kind = False, None
    return ScoredSequence(seq, out, end, end.anomalous or any(v.anomalous for v in out))
