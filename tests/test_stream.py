"""StreamScorer and the lean forward: the same ranks as Scorer's full teacher-forced pass."""

from __future__ import annotations

import random

import pytest
import torch

from logllama_tui import stream as stream_module
from logllama_tui.config import UNK, ModelConfig
from logllama_tui.lean import LeanLlama
from logllama_tui.model import build_model
from logllama_tui.records import Sequence
from logllama_tui.scoring import Scorer
from logllama_tui.stream import StreamScorer

N_KEYS, K = 10, 4
TINY = dict(n_layers=2, n_heads=2, hidden=8, head_dim=4, intermediate=16, max_positions=16,
            lstm_hidden=8, embed_dim=8, lstm_layers=2)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, **TINY), vocab_size=4 + N_KEYS).eval()


def streams(seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    keys = [UNK, *range(4, 4 + N_KEYS)]
    # lengths past the context (16) exercise the restarts from the last `overlap` inputs
    return {f"s{i}": [rng.choice(keys) for _ in range(rng.randint(1, 50))] for i in range(5)}


def feed_ragged(scorer: StreamScorer, data: dict[str, list[int]], seed: int) -> dict[str, list]:
    """Feed every stream in random ragged chunks, several streams per step; verdicts per stream."""
    rng = random.Random(seed)
    got: dict[str, list] = {sid: [] for sid in data}
    pos = dict.fromkeys(data, 0)
    while any(pos[s] < len(data[s]) for s in data):
        jobs = []
        for sid, keys in data.items():
            if pos[sid] < len(keys) and rng.random() < 0.7:
                end = min(len(keys), pos[sid] + rng.randint(1, 20))
                jobs.append((sid, keys[:end], pos[sid]))
                pos[sid] = end
        for (sid, _, _), verdicts in zip(jobs, scorer.rank(jobs), strict=True):
            got[sid] += verdicts
    return got


@pytest.mark.parametrize("arch,lean,overlap,longest", [
    ("llama", True, None, None), ("llama", True, 8, None), ("llama", True, None, 12),
    ("llama", False, None, None), ("deeplog", True, None, None)])
def test_stream_ranks_equal_full_pass(arch: str, lean: bool, overlap: int | None,
                                      longest: int | None) -> None:
    model = tiny(arch)
    data = streams(1)
    full = Scorer(model, N_KEYS, K, batch_size=3, overlap=overlap, slice_keys=longest)
    ref = {sid: full.score([Sequence(sid, keys)])[0].verdicts for sid, keys in data.items()}
    stream = StreamScorer(model, N_KEYS, K, overlap=overlap, slice_keys=longest, lean=lean)
    assert stream.context == full.context == (None if arch == "deeplog" else longest or 16)
    assert stream.kind == {"llama": "llama" if lean else "full", "deeplog": "lstm"}[arch]
    got = feed_ragged(stream, data, 2)
    for sid in data:
        assert [v.rank for v in got[sid]] == [v.rank for v in ref[sid]]
        assert [(v.anomalous, v.kind) for v in got[sid]] == [(v.anomalous, v.kind) for v in ref[sid]]
        for a, b in zip(got[sid], ref[sid], strict=True):
            assert [c for c, _ in a.candidates] == [c for c, _ in b.candidates]
            assert [p for _, p in a.candidates] == pytest.approx([p for _, p in b.candidates], abs=1e-5)


def test_stream_evicted_state_is_rebuilt() -> None:
    model = tiny("llama")
    data = streams(3)
    ref = StreamScorer(model, N_KEYS, K)
    small = StreamScorer(model, N_KEYS, K, max_cached=16)  # room for about one stream
    a, b = feed_ragged(ref, data, 4), feed_ragged(small, data, 4)
    assert {s: [v.rank for v in vs] for s, vs in a.items()} == {s: [v.rank for v in vs] for s, vs in b.items()}
    assert small.forward_keys > ref.forward_keys  # evictions forced rebuilds


def test_one_long_chunk_runs_all_its_slices_in_bounded_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "ROUND_POSITIONS", 40)  # about 2 slices of 16 per round
    model = tiny("llama")
    rng = random.Random(5)
    keys = [rng.randrange(4, 4 + N_KEYS) for _ in range(300)]
    ref = [v.rank for v in Scorer(model, N_KEYS, K).score([Sequence("a", keys)])[0].verdicts]
    stream = StreamScorer(model, N_KEYS, K)
    got = [v.rank for v in stream.rank([("a", keys[:290], 0), ("b", keys[:5], 0)])[0]]
    got += [v.rank for v in stream.rank([("a", keys, 290)])[0]]  # goes on from the kept slice
    assert got == ref
    assert stream.forward_keys < 300 * 1.2  # each key once, plus the 2 inputs each restart repeats
    assert stream._held == sum(st.size for st in stream.states.values())


def test_lstm_streams_share_one_pass_however_long(monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = StreamScorer(tiny("deeplog"), N_KEYS, K)
    keys = [4 + i % N_KEYS for i in range(3000)]
    scorer.rank([(s, keys[:2990], 0) for s in "abc"])
    calls: list[int] = []
    run = scorer._run
    monkeypatch.setattr(scorer, "_run", lambda segs, jobs, out: (calls.append(len(segs)),
                                                                 run(segs, jobs, out)))
    got = scorer.rank([(s, keys, 2990) for s in "abc"])
    assert calls == [3] and [len(v) for v in got] == [10, 10, 10]  # (h, c) carried: no past to hold


def test_stream_restarts_where_scorer_cuts() -> None:
    stream = StreamScorer(tiny("llama"), N_KEYS, K)  # context 16: slices repeat 2 inputs
    assert (stream.context, stream.overlap) == (16, 2)
    assert [stream.piece_start(p) for p in (0, 15, 16, 29, 30, 43, 44)] == [0, 0, 14, 14, 28, 28, 42]
    half = StreamScorer(tiny("llama"), N_KEYS, K, overlap=8)
    assert [half.piece_start(p) for p in (0, 15, 16, 23, 24, 31, 32)] == [0, 0, 8, 8, 16, 16, 24]


def test_lean_forward_matches_transformers_and_its_cache() -> None:
    model = tiny("llama")
    lean = LeanLlama.from_hf(model)
    ids = torch.randint(4, 4 + N_KEYS, (3, 12))
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    full = lean(ids, torch.arange(12).expand(3, 12))
    kv = lean.kv_buffer(3, 12)
    part = torch.cat([lean(ids[:, :5], torch.arange(5).expand(3, 5), kv, 0),
                      lean(ids[:, 5:], torch.arange(5, 12).expand(3, 7), kv, 5)], dim=1)
    assert torch.allclose(full, ref, atol=1e-5)
    assert torch.allclose(part, ref, atol=1e-5)
    assert torch.equal(full.argsort(-1), ref.argsort(-1))


def test_long_chunks_attend_in_causal_blocks_like_transformers() -> None:
    """More queries than lean.QUERY_BLOCK: blocks that stop at their own last key, sdpa or not."""
    from logllama_tui import lean as lean_mod

    torch.manual_seed(0)
    cfg = dict(TINY, max_positions=256)
    model = build_model(ModelConfig(arch="llama", **cfg), vocab_size=4 + N_KEYS).eval()
    net = LeanLlama.from_hf(model)
    ids = torch.randint(4, 4 + N_KEYS, (2, 200))
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert 200 > lean_mod.QUERY_BLOCK
    kv = net.kv_buffer(2, 200)
    part = torch.cat([net(ids[:, :70], torch.arange(70).expand(2, 70), kv, 0),
                      net(ids[:, 70:], torch.arange(70, 200).expand(2, 130), kv, 70)], dim=1)
    for got in (net(ids, torch.arange(200).expand(2, 200)), part):
        assert torch.allclose(got, ref, atol=1e-5)
        assert torch.equal(got.argsort(-1), ref.argsort(-1))
