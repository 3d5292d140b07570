"""Top-K scoring: ranks, unseen keys, the end key, batching, strides, the cache and K."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from logllama_tui.config import BOS, EOS, FIRST_KEY, UNK
from logllama_tui.errors import BadInput
from logllama_tui.records import Sequence
from logllama_tui.scoring import (
    SCORE_SLICE,
    Scorer,
    calibrate_k,
    default_model_for,
    k_for_fpr,
    resolve_k,
    slice_start,
    slicing,
)

torch.set_num_threads(1)
N_KEYS = 6
V = FIRST_KEY + N_KEYS  # ids 0..9; real keys 4..9


class Bigram(torch.nn.Module):
    """Logits depend only on the current input id: table[input_id]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        self.calls += 1
        return SimpleNamespace(logits=self.table[input_ids])


def ascending() -> Bigram:
    """logit[v] = v everywhere: key v's rank is the number of larger candidate ids."""
    return Bigram(torch.arange(V, dtype=torch.float).repeat(V, 1))


def tiny_llama(context: int = 64, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                      max_position_embeddings=context, pad_token_id=0, bos_token_id=BOS,
                      eos_token_id=EOS)
    return LlamaForCausalLM(cfg).eval()


def seq(keys: list[int], sid: str = "s", label: bool | None = None) -> Sequence:
    return Sequence(sid=sid, keys=list(keys), records=[], label=label)


def test_resolve_k_counts_and_fractions() -> None:
    assert resolve_k(3, 6) == 3
    assert resolve_k("3", 6) == 3
    assert resolve_k(0.5, 6) == 4  # round(0.5 * 7 candidates) = 4 (banker's rounding of 3.5)
    assert resolve_k("0.5", 9) == 5  # 0.5 * 10
    assert resolve_k(1.0, 6) == 7
    assert resolve_k(7, 6) == 7
    assert resolve_k(0.01, 6) == 1  # never below 1
    for bad in (0, 8, -1, "x", "0", 1.5, "auto", -0.2):
        with pytest.raises(BadInput):
            resolve_k(bad, 6)


def test_ranks_are_exact_with_known_logits() -> None:
    # candidates are ids 2 (EOS) and 4..9; larger id = larger logit.
    scorer = Scorer(ascending(), N_KEYS, k=3)
    (out,) = scorer.score([seq([9, 8, 7, 4])])
    assert [v.rank for v in out.verdicts] == [0, 1, 2, 5]
    assert [v.kind for v in out.verdicts] == [None, None, None, "rank"]
    assert out.end.key == EOS and out.end.rank == 6 and out.end.kind == "rank"
    assert out.anomalous and out.max_rank == 6
    assert [i for i, _ in out.anomalous_keys()] == [3]


def test_unseen_key_is_anomalous_regardless_of_rank() -> None:
    scorer = Scorer(ascending(), N_KEYS, k=7)  # K = every candidate: nothing fails on rank
    (out,) = scorer.score([seq([9, UNK, 4])])
    assert [v.kind for v in out.verdicts] == [None, "unseen", None]
    assert out.verdicts[1].rank == N_KEYS + 1
    assert out.anomalous and not out.end.anomalous


def test_candidates_only_for_flagged_keys_and_sorted() -> None:
    scorer = Scorer(ascending(), N_KEYS, k=3, n_candidates=3)
    (out,) = scorer.score([seq([9, 4])])
    assert out.verdicts[0].candidates == []
    cands = out.verdicts[1].candidates
    assert [k for k, _ in cands] == [9, 8, 7]
    probs = [p for _, p in cands]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) < 1
    expected = torch.softmax(torch.tensor([2.0, 4, 5, 6, 7, 8, 9]), 0)[-1].item()
    assert probs[0] == pytest.approx(expected)
    every = Scorer(ascending(), N_KEYS, k=3, all_candidates=True).score([seq([9, 4])])[0]
    assert [k for k, _ in every.verdicts[0].candidates] == [9, 8, 7, 6, 5]


def test_end_key_can_be_left_out() -> None:
    keys = [9, 9]
    with_end = Scorer(ascending(), N_KEYS, k=3).score([seq(keys)])[0]
    without = Scorer(ascending(), N_KEYS, k=3, score_end=False).score([seq(keys)])[0]
    assert with_end.anomalous and with_end.end.kind == "rank"
    assert not without.anomalous and without.end.rank == 6


def test_batched_equals_one_at_a_time_on_a_real_llama() -> None:
    model = tiny_llama()
    seqs = [seq([4 + (i * j) % N_KEYS for j in range(n)], f"s{i}")
            for i, n in enumerate([1, 3, 7, 12, 2, 30, 5])]
    batched = Scorer(model, N_KEYS, k=3, batch_size=4).score(seqs)
    for s, b in zip(seqs, batched, strict=True):
        alone = Scorer(model, N_KEYS, k=3, batch_size=1).score([s])[0]
        assert b.seq is s
        assert [v.rank for v in b.verdicts] == [v.rank for v in alone.verdicts]
        assert b.end.rank == alone.end.rank
        assert len(b.verdicts) == len(s.keys)


def test_long_sequence_is_strided_not_truncated() -> None:
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(1))
    keys = [4 + (i * 7 + i // 3) % N_KEYS for i in range(53)]
    full = Scorer(Bigram(table), N_KEYS, k=3, context=None).score([seq(keys)])[0]
    strided = Scorer(Bigram(table), N_KEYS, k=3, context=8).score([seq(keys)])[0]
    assert len(strided.verdicts) == 53
    assert [v.rank for v in strided.verdicts] == [v.rank for v in full.verdicts]
    assert strided.end.rank == full.end.rank
    llama = Scorer(tiny_llama(context=16), N_KEYS, k=3).score([seq(keys * 3)])[0]
    assert llama.seq.keys == keys * 3 and len(llama.verdicts) == 159


def test_each_later_slice_repeats_the_overlap_as_history() -> None:
    scorer = Scorer(ascending(), N_KEYS, k=3, context=8, overlap=4)
    pieces = scorer._pieces(0, tuple([4] * 20))  # 21 framed positions
    assert [(p.start, len(p.inputs), p.first_scored) for p in pieces] == [
        (0, 8, 0), (4, 8, 4), (8, 8, 4), (12, 8, 4), (16, 5, 4)]
    assert pieces[0].inputs[0] == BOS and pieces[-1].targets[-1] == EOS
    # by default a later slice repeats the last eighth of a slice: 16 -> 2 inputs of history
    pieces = Scorer(ascending(), N_KEYS, k=3, context=16)._pieces(0, tuple([4] * 40))
    assert [(p.start, len(p.inputs), p.first_scored) for p in pieces] == [
        (0, 16, 0), (14, 16, 2), (28, 13, 2)]
    with pytest.raises(BadInput, match="overlap"):
        Scorer(ascending(), N_KEYS, k=3, context=8, overlap=8)


def test_slices_are_score_slice_long_for_a_longer_context() -> None:
    assert slicing(512) == (SCORE_SLICE, SCORE_SLICE // 8) and slicing(None) == (None, 0)
    assert Scorer(tiny_llama(context=2 * SCORE_SLICE), N_KEYS, k=3).context == SCORE_SLICE
    assert slicing(16) == (16, 2)
    span, keep = SCORE_SLICE, SCORE_SLICE // 8
    assert [slice_start(p, span, keep) for p in (0, span - 1, span, 2 * span - keep - 1,
                                                 2 * span - keep)] == [0, 0, span - keep, span - keep,
                                                                         2 * (span - keep)]


def test_identical_sequences_run_through_the_model_once() -> None:
    model = ascending()
    scorer = Scorer(model, N_KEYS, k=3)
    out = scorer.score([seq([9, 8], "a"), seq([9, 8], "b"), seq([5], "c")])
    assert [o.seq.sid for o in out] == ["a", "b", "c"]
    assert scorer.forward_keys == 5 and scorer.scored_keys == 5
    scorer.score([seq([9, 8], "d")])
    assert scorer.forward_keys == 5 and model.calls == 1


def test_k_for_fpr_picks_the_smallest_k() -> None:
    assert k_for_fpr([0, 1, 2, 5], n_keys=10, target_fpr=0.25) == 3
    assert k_for_fpr([0, 1, 2, 5], n_keys=10, target_fpr=0.01) == 6
    assert k_for_fpr([0, 1, 2, 5], n_keys=10, target_fpr=1.0) == 1
    assert k_for_fpr([11, 11], n_keys=10, target_fpr=0.01) == 11  # capped at every candidate


def test_calibrate_k_meets_the_target_on_validation() -> None:
    model = tiny_llama()
    val = [seq([4 + (i + j) % N_KEYS for j in range(1 + i % 5)], f"v{i}", False) for i in range(40)]
    k = calibrate_k(model, val, N_KEYS, target_fpr=0.1)
    flagged = sum(s.anomalous for s in Scorer(model, N_KEYS, k).score(val))
    assert flagged <= 4
    if k > 1:
        assert sum(s.anomalous for s in Scorer(model, N_KEYS, k - 1).score(val)) > 4
    with pytest.raises(BadInput):
        calibrate_k(model, [], N_KEYS, 0.1)


def test_out_of_range_k_is_bad_input() -> None:
    with pytest.raises(BadInput):
        Scorer(ascending(), N_KEYS, k=0)
    with pytest.raises(BadInput):
        Scorer(ascending(), N_KEYS, k=N_KEYS + 2)


def test_default_model_lookup(tmp_path) -> None:
    assert default_model_for("hdfs", tmp_path / "none") is None
    (tmp_path / "hdfs").mkdir()
    assert default_model_for("hdfs", tmp_path) == tmp_path / "hdfs"
    other = tmp_path / "small-bgl"
    other.mkdir()
    (other / "meta.json").write_text('{"format": "bgl"}')
    assert default_model_for("bgl", tmp_path) == other
    assert default_model_for("syslog", tmp_path) is None


def test_cache_is_bounded_by_keys() -> None:
    model = ascending()
    scorer = Scorer(model, N_KEYS, k=3, cache_keys=3)
    scorer.score([seq([9, 8], "a")])  # 3 framed positions: fits
    scorer.score([seq([5], "b")])  # 2 more: "a" is evicted
    scorer.score([seq([9, 8], "c")])
    assert scorer.forward_keys == 3 + 2 + 3 and model.calls == 3
