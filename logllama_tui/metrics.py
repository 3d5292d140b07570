"""Sequence-level detection metrics: the confusion counts and precision, recall, F1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Confusion:
    """TP/FP/FN/TN over sequences (positive = anomalous)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        """Count one sequence."""
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def total(self) -> int:
        """Sequences counted."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing was flagged."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when there are no anomalies."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """precision, recall, f1 (rounded to 4 places) and the four counts."""
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def confusion_at(worst: list[tuple[int, bool]], k: int) -> Confusion:
    """Confusion when a sequence is flagged iff its worst rank is >= K."""
    c = Confusion()
    for rank, actual in worst:
        c.add(rank >= k, actual)
    return c


__all__ = ["Confusion", "confusion_at"]
