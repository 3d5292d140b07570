"""The two-core scan: the prefix trie ranks like Scorer while sequences grow; frames; the worker."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch

from logllama_tui.config import UNK, ModelConfig
from logllama_tui.fastscan import (
    Grower,
    ScoreWorker,
    read_frame,
    score_stream,
    verdicts,
    write_frame,
)
from logllama_tui.lean import LeanLlama
from logllama_tui.model import build_model
from logllama_tui.prefix import PrefixTrie
from logllama_tui.records import Sequence
from logllama_tui.scoring import Scorer

N_KEYS, K = 10, 4
TINY = dict(n_layers=2, n_heads=2, hidden=8, head_dim=4, intermediate=16, max_positions=16)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_model(ModelConfig(**TINY), vocab_size=4 + N_KEYS).eval()


def tuples(seed: int, n: int = 60) -> list[tuple[int, ...]]:
    """Sequences sharing prefixes (as logs do), some past the context of 16."""
    rng = random.Random(seed)
    base = [rng.randint(4, 13) for _ in range(14)]
    tail = [UNK, *range(4, 14)]
    out = {tuple(base[: rng.randint(0, 14)] + [rng.choice(tail) for _ in range(rng.randint(0, 12))])
           for _ in range(n)}
    return sorted(out, key=lambda t: (len(t), t))


def same_as_scorer(got: list, ref: list) -> None:
    for (ranks, cands), r in zip(got, ref, strict=True):
        vs = [*r.verdicts, r.end]
        assert ranks == [v.rank for v in vs]
        assert sorted(cands) == [j for j, v in enumerate(vs) if v.candidates]
        for j, v in enumerate(vs):
            if v.candidates:
                assert [c for c, _ in cands[j]] == [c for c, _ in v.candidates]
                assert [p for _, p in cands[j]] == pytest.approx([p for _, p in v.candidates], abs=1e-5)


@pytest.mark.parametrize("max_bytes", [1 << 20, 40 * 2 * 2 * 2 * 4 * 4])  # roomy; ~40 nodes
def test_trie_ranks_like_scorer_while_sequences_grow(max_bytes: int) -> None:
    model = tiny()
    seqs = tuples(1, 120)
    ref = Scorer(model, N_KEYS, K).score([Sequence("x", list(t)) for t in seqs])
    trie = PrefixTrie(LeanLlama.from_hf(model), N_KEYS, K, max_bytes=max_bytes)
    rng = random.Random(0)
    for tag, t in enumerate(seqs[::2]):  # half of them grow in ragged chunks before they close
        at = 0
        while at < len(t):
            n = rng.randint(1, 5)
            trie.grow(tag, t[at: at + n])
            at += n
            if rng.random() < 0.3:
                trie.run()
        if tag % 3 == 0:
            trie.drop(tag)
    same_as_scorer(trie.rank(seqs[:50]) + trie.rank(seqs[50:]), ref)
    assert (trie.clears == 0) == (max_bytes == 1 << 20)  # the small bound forced fresh starts
    short = [t for t in seqs if len(t) < 15]  # within the context: no restarts
    fresh = PrefixTrie(LeanLlama.from_hf(model), N_KEYS, K, max_bytes=max_bytes)
    fresh.rank(short)
    if max_bytes == 1 << 20:
        assert fresh.forward_keys < 0.7 * sum(len(t) + 1 for t in short)  # shared prefixes ran once


def test_a_repeated_later_slice_runs_once() -> None:
    model = tiny()
    burst = (5,) * 60  # one template over and over (a BGL burst): its later slices are alike
    trie = PrefixTrie(LeanLlama.from_hf(model), N_KEYS, K)
    got = trie.rank([burst, (*burst[:30], 6, *burst[:20])])
    same_as_scorer(got, Scorer(model, N_KEYS, K).score([Sequence("x", list(burst)),
                                                         Sequence("y", [*burst[:30], 6, *burst[:20]])]))
    # BOS and 15 keys; a root for the slices that start with key 5 and its 15 keys; then only the
    # second tuple's slice from input 28 is new: its key 6 at depth 3 and the 12 keys after it
    assert trie.forward_keys == 16 + 16 + 13


def test_open_sequences_are_ranked_before_they_close() -> None:
    model = tiny()
    trie = PrefixTrie(LeanLlama.from_hf(model), N_KEYS, K)
    t = (4, 5, UNK, 7, 8, 9, 10)
    trie.grow("a", t[:3])
    trie.grow("a", t[3:5])
    assert trie.run() == 6 and trie.forward_keys == 6  # BOS + 5 keys, before any close
    trie.grow("b", t[:4])  # a prefix already run: nothing new
    assert trie.queued == 0
    got = trie.rank([t, t[:4]])
    assert trie.forward_keys == 8  # at the close only the two keys gained since ran
    same_as_scorer(got, Scorer(model, N_KEYS, K).score([Sequence("x", list(t)),
                                                          Sequence("y", list(t[:4]))]))


def test_verdicts_match_scorer() -> None:
    model = tiny()
    seqs = [Sequence(str(i), list(t)) for i, t in enumerate(tuples(2, 20))]
    ref = Scorer(model, N_KEYS, K).score(seqs)
    for s, r in zip(seqs, ref, strict=True):
        vs = [*r.verdicts, r.end]
        ranked = ([v.rank for v in vs], {j: v.candidates for j, v in enumerate(vs) if v.candidates})
        got = verdicts(s, ranked, K)
        assert got.anomalous == r.anomalous
        assert [(v.rank, v.kind, v.candidates) for v in got.verdicts] == \
            [(v.rank, v.kind, v.candidates) for v in r.verdicts]
        assert got.anomalous_keys() == [(i, got.verdicts[i]) for i, _ in r.anomalous_keys()]


def test_frames_round_trip() -> None:
    buf = io.BytesIO()
    write_frame(buf, {"seqs": [[4, 5], []]})
    write_frame(buf, {"x": 1})
    buf.seek(0)
    assert read_frame(buf) == {"seqs": [[4, 5], []]}
    assert read_frame(buf) == {"x": 1}
    assert read_frame(buf) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from logllama_tui.checkpoint import save_checkpoint
    from logllama_tui.config import ModelConfig as MC
    from logllama_tui.config import TrainConfig, to_dict
    from logllama_tui.parser import LogParser

    parser = LogParser()
    for name in range(N_KEYS):
        parser.vocab.add(f"c{name + 1}")
    meta = {"arch": "llama", "model_config": to_dict(MC(**TINY)), "train_config": to_dict(TrainConfig()),
            "vocab_size": 4 + N_KEYS, "n_keys": N_KEYS}
    out = tmp_path_factory.mktemp("ckpt") / "m"
    save_checkpoint(out, tiny(), parser, meta)
    return out


def test_worker_process_end_to_end(checkpoint: Path) -> None:
    seqs = [Sequence(str(i), list(t)) for i, t in enumerate(tuples(3, 40))] * 2
    ref = Scorer(tiny(), N_KEYS, K).score(seqs)
    workers = [ScoreWorker(str(checkpoint), K, 5, "cpu") for _ in range(2)]
    try:
        got = [s for batch in score_stream(iter(seqs), workers, K, buffer=7, in_flight=2)
               for s in batch]
        assert workers[0].wait_ready()["engine"] == "lean llama, prefix trie"
    finally:
        for w in workers:
            w.close()
    assert [g.seq.sid for g in got] == [s.sid for s in seqs]  # input order kept
    assert [[v.rank for v in (*g.verdicts, g.end)] for g in got] == \
        [[v.rank for v in (*r.verdicts, r.end)] for r in ref]
    assert [g.anomalous for g in got] == [r.anomalous for r in ref]


def test_worker_ranks_grown_sequences_like_scorer(checkpoint: Path) -> None:
    """Sequences fed key by key, reported as they grow (Grower), closed in a different order."""
    full = tuples(4, 40)
    open_seqs = {str(i): Sequence(str(i), []) for i in range(len(full))}
    worker = ScoreWorker(str(checkpoint), K, 5, "cpu")
    grower = Grower(worker)
    order: list[str] = []  # most recently fed last, as a session windower keeps them
    rng = random.Random(5)
    try:
        for step in range(200):
            sid = str(rng.randrange(len(full)))
            seq = open_seqs[sid]
            if len(seq.keys) < len(full[int(sid)]):
                seq.keys.append(full[int(sid)][len(seq.keys)])
                order = [s for s in order if s != sid] + [sid]
            if step % 7 == 0:
                grower.tick(open_seqs[s] for s in reversed(order))
        for seq in open_seqs.values():  # the rest of each sequence arrives with its close
            seq.keys[:] = full[int(seq.sid)]
        closing = sorted(open_seqs.values(), key=lambda s: -len(s.keys))
        got = [s for batch in score_stream(grower.closed(iter(closing)), [worker], K, buffer=9)
               for s in batch]
        assert worker.wait_ready()["engine"] == "lean llama, prefix trie"
    finally:
        worker.close()
    assert grower.live == {}  # every close was noted
    ref = Scorer(tiny(), N_KEYS, K).score(closing)
    assert [[v.rank for v in (*g.verdicts, g.end)] for g in got] == \
        [[v.rank for v in (*r.verdicts, r.end)] for r in ref]


def test_worker_error_is_a_clear_message(tmp_path: Path) -> None:
    from logllama_tui.errors import LogLlamaError

    worker = ScoreWorker(str(tmp_path / "missing"), K, 5, "cpu")
    with pytest.raises(LogLlamaError):
        list(score_stream(iter([Sequence("a", [4, 5])]), [worker], K))
