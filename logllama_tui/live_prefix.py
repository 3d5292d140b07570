"""The verdict cache of `tail`: verdicts remembered by key prefix (no torch here).

A key's verdict is a function of its sequence's keys up to and including it (a causal model only
looks back; past the context the slice start depends only on the position), so two sessions that
went through the same keys get the same verdict for their next one. Live logs repeat themselves:
on HDFS_dev.log 92.5% of the lines in a session follow a prefix seen before (11,558 distinct
prefixes in 155,198 lines), and each of those is answered here without calling the model at all
(prefix.PrefixTrie would not run it again either, but re-walks and re-ranks the whole sequence:
the cache makes the live scorer 7-20% faster on top of it). The prefixes form a trie of integer
node ids: each open sequence remembers its node, one dict lookup per line moves it on.

Past the first scoring slice a key's verdict depends only on the keys of its own slice (the
Scorer's: scoring.slicing), so there the trie is walked per slice, from a root shared by every
later slice: a burst of one template (BGL's 60 s windows) repeats its slices, and each repeat is
answered here without the model.
"""

from __future__ import annotations

from typing import Any, Protocol

from logllama_tui.resolve import slice_start

PREFIX_NODES = 200_000
"""Trie nodes kept (each ~200 bytes with its verdict): past it the trie starts afresh."""


class Walker(Protocol):
    """What the trie needs of an open sequence (live._Open)."""

    keys: list[int]
    node: int
    """Trie node of keys[:depth] (past the first slice: of the keys of the slice of key depth - 1);
    ids are never reused, so a node made before a reset stays valid."""
    depth: int
    slice: int
    """Input index where the slice of key depth - 1 begins (0 in the first slice)."""


class PrefixVerdicts:
    """(node of keys[:i], key i) -> node of keys[:i + 1]; node -> the verdict on its last key."""

    def __init__(self, limit: int = PREFIX_NODES, slices: tuple[int | None, int] = (None, 0)) -> None:
        self.limit = limit
        self.span, self.keep = slices
        """The Scorer's slices (scoring.slicing); (None, 0): whole prefixes, always right."""
        self.children: dict[tuple[int, int], int] = {}
        self.verdicts: dict[int, Any] = {}
        self._next = 1
        """Node 0 is the empty prefix; node -1 the root of every later slice."""
        self.hits = 0
        self.misses = 0

    def nodes(self, seq: Walker, lo: int, hi: int) -> list[int]:
        """Nodes of keys[:i + 1] for i in lo..hi (walks on from where `seq` stopped); past the
        first slice, the node of the slice's keys up to key i from the root of later slices."""
        if seq.depth > lo:  # never happens in order; a restart keeps the verdicts right
            seq.node, seq.depth, seq.slice = 0, 0, 0
        keys = seq.keys
        node, depth, start = seq.node, seq.depth, seq.slice
        out = []
        while depth <= hi:
            at = slice_start(depth, self.span, self.keep)  # key `depth` is ranked at input `depth`
            if at != start:  # a new slice: its inputs before this key, from the later-slice root
                node, start = -1, at
                for j in range(at - 1, depth):  # input `at` is keys[at - 1]
                    node = self._child(node, keys[j])
            node, depth = self._child(node, keys[depth]), depth + 1
            if depth > lo:
                out.append(node)
        seq.node, seq.depth, seq.slice = node, depth, start
        return out

    def _child(self, node: int, key: int) -> int:
        child = self.children.get((node, key))
        if child is None:
            child = self.children[(node, key)] = self._next
            self._next += 1
        return child

    def lookup(self, nodes: list[int]) -> tuple[list[Any], int]:
        """(verdicts known for `nodes`, None where unknown; index of the first unknown or len)."""
        got = [self.verdicts.get(n) for n in nodes]
        first = next((i for i, v in enumerate(got) if v is None), len(got))
        self.hits += first
        self.misses += len(got) - first
        return got, first

    def store(self, nodes: list[int], verdicts: list[Any]) -> None:
        """Remember the verdicts the model gave for `nodes`; start afresh past the limit."""
        if len(self.children) > self.limit:
            self.children.clear()
            self.verdicts.clear()
        self.verdicts.update(zip(nodes, verdicts, strict=True))


__all__ = ["PREFIX_NODES", "PrefixVerdicts"]
