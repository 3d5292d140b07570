"""Shared-prefix scoring for `scan`: every distinct prefix runs once, while its sequence grows.

Logs repeat themselves: on HDFS_dev.log x 3 the 475k scored positions (keys + ends) come from 1,834
distinct tuples holding 57k distinct prefixes. `PrefixTrie` keeps one node per distinct prefix with
its K/V (all layers) and its logits, so a key is run once however many sequences share the prefix
that ends in it, and a sequence still open is ranked as it grows (the verdict of position i depends
only on keys <= i): when it closes, only what it gained since the last report and its end are left.
Past a slice (scoring.SCORE_SLICE) the same holds per slice: each later slice is a path from a root
of its own, so on BGL_100k_structured.csv's 60 s windows `scan` went from 15.1 to 5.3 s with the
same output (the later slices had been re-run from scratch by a StreamScorer).

Tried and dropped: a trie run with tree attention over dense sub-tries (each node attending to all
of its sub-trie under a mask, ancestors re-run): 2-3x slower than sorted lanes; sorted lanes
(distinct tuples of a buffer in sorted order, each lane rewinding its KV cache to the prefix shared
with its last tuple): as fast per position as this trie, but a tuple can only run once it is
closed, so on a file whose sessions stay open to the end the scoring only started when the
parsing ended.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from logllama_tui.config import BOS, EOS
from logllama_tui.lean import Bucket
from logllama_tui.scoring import slice_start, slicing
from logllama_tui.verdicts import Candidates

Ranked = tuple[list[int], dict[int, Candidates]]
"""Ranks of k1..kn and EOS, and the candidates of flagged positions (by position)."""
MAX_TRIE_BYTES = 1 << 30
"""K/V memory of a PrefixTrie: one slot per distinct prefix (10 KB for the paper-size model; HDFS
x 3 holds 57k); past it the trie starts over."""
MAX_NODES = 1 << 18
"""Bound on the nodes of a PrefixTrie whatever their size (the Python side costs ~200 B each)."""
MAX_RUN = 4096
"""Nodes run in one forward call (bounds the activations)."""
BUCKET_CELLS = 1 << 15
"""Padded (row x query x path position) cells of one attention bucket."""


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


class PrefixTrie:
    """Every distinct prefix run once, its K/V kept: ranks for sequences that are still growing.

    Node = a distinct prefix BOS k1..kd (depth d, its key k_d at position d); its logits rank the
    key that follows (or EOS). `grow(tag, keys)` extends an open sequence's path and queues the new
    nodes; `run()` pushes every queued node through the network in one call (chains of new nodes
    as rows over their paths, LeanLlama.tree); `rank(tuples)` walks finished tuples (only what is
    still missing runs) and reads their ranks off the nodes. The model is causal and Scorer's slices
    are fixed, so a node's logits never change once run. A tuple longer than a slice goes on in
    Scorer's later slices, each a path from a root of its own: the slice's first input at position
    0 (`_root`), so a slice seen before runs no more than a prefix seen before (BGL's 60 s windows:
    16% of the positions of their later slices are distinct prefixes).
    """

    def __init__(self, net: Any, n_keys: int, k: int, n_candidates: int = 5,
                 max_bytes: int = MAX_TRIE_BYTES, *, context: int | None = None,
                 overlap: int | None = None) -> None:
        self.net, self.n_keys, self.k, self.n_candidates = net, n_keys, k, n_candidates
        self.context, self.overlap = slicing(context or net.max_positions, overlap, context)
        """Slice length (the deepest path) and what a later slice repeats: the Scorer's (given
        when it was made with other slices than the default)."""
        slot = net.n_layers * 2 * net.n_heads * net.head_dim * 4
        self.capacity = max(self.context + 1, min(max_bytes // slot, MAX_NODES))
        # torch.empty commits pages only as slots are written: memory follows the trie's size
        self.pool = torch.empty(net.n_layers, 2, self.capacity, net.n_heads, net.head_dim)
        self.logits = torch.empty(self.capacity, net.vocab_size)
        self.parents = torch.empty(self.capacity, dtype=torch.long)
        self.tags: dict[Hashable, list[int]] = {}
        """Keys of each growing sequence (up to the context), to rebuild its path after a clear."""
        self.at: dict[Hashable, tuple[int, int]] = {}
        """Each growing sequence's (node, keys walked)."""
        self.forward_keys = 0
        """Nodes run through the network: for speed reports and tests."""
        self.clears = 0
        self._clear()
        self.clears = 0

    def _clear(self) -> None:
        """Forget every node (the K/V memory is full); growing sequences rebuild as they grow."""
        self.child: dict[int, int] = {}  # node * vocab + key -> node
        self.key_of: list[int] = [BOS]  # node 0 is the root: BOS at position 0
        self.depth: list[int] = [0]
        self.parent: list[int] = [0]
        self.roots: dict[int, int] = {}
        """First input of a later slice -> its root node (depth 0, its own parent)."""
        self.done = 0
        """Nodes [0, done) have been run (nodes are run in the order they were made)."""
        self.at = dict.fromkeys(self.at, (0, 0))
        self.clears += 1

    @property
    def nodes(self) -> int:
        return len(self.key_of)

    def _walk(self, node: int, keys: Sequence[int]) -> list[int]:
        """The nodes of `keys` below `node`, made where missing (queued to run); stops at the
        context's last position."""
        child, key_of, depth, parent = self.child, self.key_of, self.depth, self.parent
        vocab, limit = self.net.vocab_size, self.context - 1
        path = []
        for key in keys:
            if depth[node] >= limit:
                break
            nxt = child.get(node * vocab + key)
            if nxt is None:
                nxt = child[node * vocab + key] = len(key_of)
                key_of.append(key)
                depth.append(depth[node] + 1)
                parent.append(node)
            node = nxt
            path.append(node)
        return path

    # -- growing sequences --------------------------------------------------------------------
    def grow(self, tag: Hashable, keys: Sequence[int]) -> None:
        """An open sequence got these keys: make its new prefixes (run them with `run`)."""
        have = self.tags.setdefault(tag, [])
        room = self.context - 1 - len(have)
        if room <= 0:
            return
        have.extend(keys[:room])
        node, walked = self.at.get(tag, (0, 0))
        if self.nodes + len(have) - walked > self.capacity:
            self._clear()
            node, walked = 0, 0
        path = self._walk(node, have[walked:])
        self.at[tag] = (path[-1] if path else node, len(have))

    def drop(self, tag: Hashable) -> None:
        """The sequence closed (its nodes stay, for the next one that shares them)."""
        self.tags.pop(tag, None)
        self.at.pop(tag, None)

    @property
    def queued(self) -> int:
        """Nodes made and not run yet."""
        return self.nodes - self.done

    def run(self, limit: int | None = None) -> int:
        """Run queued nodes (at most `limit`), oldest first; how many ran."""
        ran = 0
        while self.done < self.nodes and (limit is None or ran < limit):
            lo = self.done
            hi = min(self.nodes, lo + MAX_RUN)
            self._forward(lo, hi)
            self.done = hi
            ran += hi - lo
        return ran

    def _forward(self, lo: int, hi: int) -> None:
        """Run nodes [lo, hi): rows are chains in which each node's parent is the one before it."""
        parent = self.parent
        self.parents[lo:hi] = torch.tensor(parent[lo:hi])
        rows, start = [], lo
        for n in range(lo + 1, hi):
            if parent[n] != n - 1:
                rows.append((start, n))
                start = n
        rows.append((start, hi))
        logits = self.net.tree(torch.tensor(self.key_of[lo:hi]), torch.tensor(self.depth[lo:hi]),
                               self.pool, lo, self._buckets(rows, lo))
        self.logits[lo:hi] = logits
        self.forward_keys += hi - lo

    def _buckets(self, rows: list[tuple[int, int]], lo: int) -> list[Bucket]:
        """Rows grouped by chain length (powers of two) and path length (within ~25%), padded."""
        depth = self.depth
        order = sorted(((e - s).bit_length(), depth[e - 1] + 1, s, e) for s, e in rows)
        out: list[Bucket] = []
        group: list[tuple[int, int, int, int]] = []
        for row in order:
            if group:
                m = 1 << row[0]  # bound on the chain lengths of this class
                if (row[0] != group[0][0] or row[1] > group[0][1] * 1.25 + 8
                        or (len(group) + 1) * m * row[1] > BUCKET_CELLS):
                    out.append(self._bucket(group, lo))
                    group = []
            group.append(row)
        if group:
            out.append(self._bucket(group, lo))
        return out

    def _bucket(self, group: list[tuple[int, int, int, int]], lo: int) -> Bucket:
        lens = torch.tensor([e - s for _, _, s, e in group])  # chain lengths
        paths = torch.tensor([n for _, n, _, _ in group])  # path lengths (root to the last node)
        m, width = int(lens.max()), int(paths.max())
        slot = torch.arange(m)
        first = (m - lens)[:, None]  # right-aligned: the first real query slot
        valid = slot[None, :] >= first
        index = (slot[None, :] - first).clamp(min=0)  # which node of the chain (padding: the first)
        queries = torch.tensor([s - lo for _, _, s, _ in group])[:, None] + index
        path = torch.empty(len(group), width, dtype=torch.long)
        node = torch.tensor([e - 1 for _, _, _, e in group])
        for c in range(width - 1, -1, -1):  # right-aligned; left of the root it repeats the root
            path[:, c] = node
            node = self.parents[node]
        own = (width - lens)[:, None] + index  # column of each query's own node
        cols = torch.arange(width)[None, None, :]
        allowed = (cols >= (width - paths)[:, None, None]) & (cols <= own[:, :, None])
        mask = torch.zeros(len(group), 1, m, width).masked_fill_(~allowed[:, None], float("-inf"))
        return Bucket(queries, path, mask, valid, queries[valid])

    # -- finished sequences ---------------------------------------------------------------------
    def rank(self, tuples: Sequence[Sequence[int]]) -> list[Ranked]:
        """(ranks of k1..kn and EOS, candidates) for each key tuple, in order."""
        out: list[Ranked] = [([], {}) for _ in tuples]
        walked: list[tuple[int, int, int, list[int]]] = []  # (tuple, slice start, first scored, path)
        for i, t in enumerate(tuples):
            inputs, pos = (BOS, *t), 0
            while pos < len(inputs):  # Scorer's slices: the first from BOS, later ones restart
                start = slice_start(pos, self.context, self.overlap)
                end = min(start + self.context, len(inputs))
                if self.nodes + end - start > self.capacity:
                    self._read(walked, tuples, out)
                    walked = []
                    self._clear()
                root = self._root(inputs[start]) if start else 0
                walked.append((i, start, pos - start, [root, *self._walk(root, inputs[start + 1:end])]))
                pos = end
        self._read(walked, tuples, out)
        return out

    def _root(self, key: int) -> int:
        """The node of `key` at position 0: where a later slice that starts with it begins."""
        node = self.roots.get(key)
        if node is None:
            node = self.roots[key] = len(self.key_of)
            self.key_of.append(key)
            self.depth.append(0)
            self.parent.append(node)  # a root is its own parent (path building stops there)
        return node

    def _read(self, walked: list[tuple[int, int, int, list[int]]], tuples: Sequence[Sequence[int]],
              out: list[Ranked]) -> None:
        """Run what is queued, then read the ranks of walked slices off their nodes' logits (a
        slice's nodes from depth `first scored` on rank the targets start + depth)."""
        from logllama_tui.stream import rank_rows

        if not walked:
            return
        self.run()
        nodes = [n for _, _, skip, path in walked for n in path[skip:]]
        targets = [key for i, start, skip, path in walked
                   for key in [*tuples[i], EOS][start + skip: start + len(path)]]
        ranks, cands = rank_rows(self.logits[torch.tensor(nodes)], torch.tensor(targets),
                                 self.n_keys, self.k, self.n_candidates)
        at = 0
        for i, start, skip, path in walked:
            got, got_cands = out[i]
            for j in range(start + skip, start + len(path)):
                got.append(ranks[at])
                if (c := cands.get(at)):
                    got_cands[j] = c
                at += 1


__all__ = ["LeanAsHF", "PrefixTrie", "Ranked"]
