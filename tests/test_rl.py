"""Pin the REINFORCE method: rewards, clipping, entropy bonus, returns, baselines, update direction."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from logllama_tui.config import EOS, FIRST_KEY, ModelConfig, RLConfig, to_dict
from logllama_tui.errors import BadInput
from logllama_tui.records import Record, Sequence
from logllama_tui.rl import (
    advantages,
    candidate_logits,
    discounted_returns,
    entropy,
    excluded_sids,
    feedback_labels,
    finetune,
    position_labels,
    reinforce_loss,
    rl_step,
    run_episodes,
    sample_actions,
    select_rl_sequences,
    shaped_rewards,
    topk_log_policy,
    topk_rewards,
    true_key_ranks,
)

torch.set_num_threads(1)
NINF = float("-inf")


def test_topk_rewards_follow_the_paper_table() -> None:
    hits = torch.tensor([[True, False, False, True]])
    anom = torch.tensor([[False, False, True, True]])
    assert topk_rewards(hits, anom).tolist() == [[1.0, -1.0, 1.0, 1.0]]
    assert topk_rewards(hits, anom, anomalous_hit=-1.0).tolist() == [[1.0, -1.0, 1.0, -1.0]]


def test_ranks_are_over_candidates_only() -> None:
    # vocab: PAD BOS EOS UNK k4 k5; reserved ids score high but are never candidates
    logits = candidate_logits(torch.tensor([[[9.0, 9.0, 0.5, 9.0, 2.0, 1.0]] * 3]), n_keys=2)
    assert logits[0, 0].tolist() == [NINF, NINF, 0.5, NINF, 2.0, 1.0]
    ranks = true_key_ranks(logits, torch.tensor([[4, 5, EOS]]))
    assert ranks.tolist() == [[0, 1, 2]]


def test_entropy_in_nats_ignores_impossible_keys() -> None:
    logp = torch.log(torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]))
    assert entropy(logp)[0].tolist() == pytest.approx([math.log(2), 0.0])
    logits = torch.tensor([[[1.0, 1.0, NINF]]], requires_grad=True)
    entropy(torch.log_softmax(logits, -1)).sum().backward()
    assert torch.isfinite(logits.grad).all()  # masked keys must not poison the gradient


def test_entropy_bonus_then_clipping() -> None:
    base = torch.tensor([[1.0, -1.0, 1.0]])
    ent = torch.tensor([[0.5, 2.0, 100.0]])
    assert shaped_rewards(base, ent, 0.1, 1.0)[0].tolist() == pytest.approx([1.0, -0.8, 1.0])
    assert shaped_rewards(base, ent, 0.1, 2.0)[0].tolist() == pytest.approx([1.05, -0.8, 2.0])
    assert shaped_rewards(torch.tensor([[-1.0]]), torch.tensor([[0.0]]), 0.1, 0.5).tolist() == [[-0.5]]


def test_discounted_returns() -> None:
    r = torch.tensor([[1.0, -1.0, 1.0], [1.0, 0.0, 0.0]])
    assert discounted_returns(r, 0.5).tolist() == [[0.75, -0.5, 1.0], [1.0, 0.0, 0.0]]
    assert discounted_returns(r, 0.0).tolist() == r.tolist()
    assert discounted_returns(r, 1.0)[0].tolist() == [1.0, 0.0, 1.0]


def test_baselines() -> None:
    ret = torch.tensor([[1.0, 3.0], [3.0, 9.0]])
    valid = torch.tensor([[True, True], [True, False]])
    assert advantages(ret, valid, "none").tolist() == ret.tolist()
    # batch mean of valid returns: (1 + 3 + 3) / 3 = 7/3
    assert advantages(ret, valid, "batch").flatten().tolist() == pytest.approx([1 - 7 / 3, 3 - 7 / 3, 3 - 7 / 3, 9 - 7 / 3])
    # per position: column 0 mean 2, column 1 mean 3 (the invalid 9 is ignored)
    assert advantages(ret, valid, "position").tolist() == [[-1.0, 0.0], [1.0, 6.0]]
    with pytest.raises(ValueError):
        advantages(ret, valid, "median")
    # reward: subtract the mean reward (1/3) before discounting, so length adds nothing
    r = torch.tensor([[1.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    v = torch.tensor([[True, True, True], [False, False, False]])
    got = advantages(discounted_returns(r, 0.5), v, "reward", r, 0.5)
    assert got[0].tolist() == pytest.approx([1 / 6, -1.0, 2 / 3]) and got[1].tolist() == [0.0] * 3
    flat = torch.ones(1, 4)
    assert advantages(discounted_returns(flat, 0.9), flat.bool(), "reward", flat, 0.9).tolist() == [[0.0] * 4]


def test_topk_policy_and_sampling_stay_in_the_topk() -> None:
    logits = torch.tensor([[[2.0, 1.0, 0.0, NINF]]])
    pi = topk_log_policy(logits, 2).exp()[0, 0]
    e = math.exp(1.0)
    assert pi.tolist() == pytest.approx([e / (e + 1), 1 / (e + 1), 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    draws = [int(sample_actions(topk_log_policy(logits, 2), gen)[0, 0]) for _ in range(400)]
    assert set(draws) == {0, 1}
    assert 0.6 < draws.count(0) / 400 < 0.85  # e/(e+1) = 0.731


def test_reinforce_loss_literal() -> None:
    logp = torch.tensor([[-1.0, -2.0, -5.0]])
    adv = torch.tensor([[2.0, 1.0, 7.0]])
    valid = torch.tensor([[True, True, False]])
    ent = torch.tensor([[1.0, 3.0, 9.0]])
    # -(2*-1 + 1*-2)/2 - 0.1 * (1+3)/2 = 2 - 0.2
    assert float(reinforce_loss(logp, adv, valid, ent, 0.1)) == pytest.approx(1.8)


def _tiny(vocab: int = 8) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, head_dim=8, intermediate_size=32,
                      max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def _logp(model: torch.nn.Module, inputs: list[int], pos: int, key: int, n_keys: int) -> float:
    with torch.no_grad():
        ids = torch.tensor([inputs])
        logits = candidate_logits(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, n_keys)
        return float(torch.log_softmax(logits, -1)[0, pos, key])


def test_one_step_moves_rewarded_action_up_and_penalised_down() -> None:
    model, n_keys = _tiny(), 4
    inputs = [1, 4, 5]
    before_a, before_b = _logp(model, inputs, 0, 6, n_keys), _logp(model, inputs, 1, 7, n_keys)
    ids = torch.tensor([inputs])
    logits = candidate_logits(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, n_keys)
    log_pi = torch.log_softmax(logits, -1)
    logp = torch.stack([log_pi[0, 0, 6], log_pi[0, 1, 7]]).unsqueeze(0)  # actions a=6 at t0, b=7 at t1
    adv = torch.tensor([[1.0, -1.0]])  # a rewarded, b penalised
    loss = reinforce_loss(logp, adv, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2), 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    assert _logp(model, inputs, 0, 6, n_keys) > before_a
    assert _logp(model, inputs, 1, 7, n_keys) < before_b


@pytest.mark.parametrize("anomalous", [False, True])
def test_true_key_step_pulls_normal_misses_in_and_pushes_anomalous_misses_out(anomalous: bool) -> None:
    model, n_keys = _tiny(), 4
    # K=1: find a key the untrained model does not rank first after BOS, so it is a miss
    with torch.no_grad():
        logits = candidate_logits(model(input_ids=torch.tensor([[1]])).logits, n_keys)[0, 0]
    miss = next(k for k in range(FIRST_KEY, FIRST_KEY + n_keys) if k != int(logits.argmax()))
    before = _logp(model, [1], 0, miss, n_keys)
    cfg = RLConfig(entropy_coef=0.0, gamma=0.0, baseline="none", lr=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    stats = rl_step(model, opt, [((1, miss), (miss, EOS), (anomalous, None), 1)], n_keys, 1, cfg)
    assert stats["positions"] == 1.0 and stats["reward"] == (1.0 if anomalous else -1.0)
    after = _logp(model, [1], 0, miss, n_keys)
    assert (after < before) if anomalous else (after > before)


def _seq(sid: str, keys: list[int], label: bool | None, inline: list[str | None] | None = None) -> Sequence:
    inline = inline or [None] * len(keys)
    recs = [Record(source="f.log", lineno=i + 1, text=f"l{i}", content=f"l{i}", label=lab)
            for i, lab in enumerate(inline)]
    return Sequence(sid=sid, keys=keys, records=recs, label=label)


def test_position_labels_prefer_inline_line_labels() -> None:
    assert position_labels(_seq("a", [4, 5], True)) == [True, True, True]
    assert position_labels(_seq("b", [4, 5], True, ["-", "APPREAD"])) == [False, True, True]
    assert position_labels(_seq("c", [4], None)) == [None, None]


def test_rl_split_excludes_training_and_is_seeded_per_class() -> None:
    seqs = [_seq(f"n{i}", [4], False) for i in range(20)] + [_seq(f"a{i}", [5], True) for i in range(10)]
    seqs.append(_seq("u", [4], None))
    meta = {"train_sids": ["n0", "n1"], "val_sids": ["n2"], "rl_sids": ["a0"]}
    assert excluded_sids(meta) == {"n0", "n1", "n2", "a0"}
    got = select_rl_sequences(seqs, meta, 0.5, seed=3)
    assert got == select_rl_sequences(list(reversed(seqs)), meta, 0.5, seed=3)
    assert sum(1 for s in got if s.label) == round(0.5 * 9) and sum(1 for s in got if not s.label) == round(0.5 * 17)
    assert not {s.sid for s in got} & (excluded_sids(meta) | {"u"})
    with pytest.raises(BadInput, match="rl-fraction"):
        select_rl_sequences(seqs, meta, 0.0, 0)


def test_feedback_labels_mark_only_the_marked_lines(tmp_path: Path) -> None:
    from logllama_tui.feedback import FeedbackRecord

    seq = _seq("s", [4, 5, 6], None)
    for r in seq.records:
        r.source = str(tmp_path / "f.log")
    marks = [FeedbackRecord(file=str(tmp_path / "f.log"), line=2, text="l1", key=5, template="t",
                            verdict="anomaly", model_name="m", model_fingerprint="sha256:x"),
             FeedbackRecord(file=str(tmp_path / "f.log"), line=3, text="changed", key=6, template="t",
                            verdict="false_positive", model_name="m", model_fingerprint="sha256:x")]
    match = feedback_labels([seq, _seq("other", [4], None)], marks)
    assert [s.sid for s in match.sequences] == ["s"]
    assert match.labels == [[None, True, None, None]]
    assert (match.matched, match.unmatched) == (1, 1)


def test_episodes_must_be_positive() -> None:
    with pytest.raises(BadInput, match="episodes"):
        run_episodes(_tiny(), [], [], 4, 1, RLConfig(episodes=0))


def _digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_finetune_writes_a_new_checkpoint_and_leaves_the_source_alone(tmp_path: Path) -> None:
    from logllama_tui.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from logllama_tui.model import build_model
    from logllama_tui.parser import LogParser

    parser = LogParser()
    for text in ("open file 1", "read block 2", "close file 3", "error disk 4"):
        parser.learn(Record(source="x", lineno=1, text=text, content=text))
    n_keys = parser.vocab.n_keys
    mcfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)
    torch.manual_seed(0)
    model = build_model(mcfg, len(parser.vocab))
    meta = {"arch": "llama", "model_config": to_dict(mcfg), "train_config": {}, "n_keys": n_keys,
            "vocab_size": len(parser.vocab), "train_sids": ["t0"], "created": "then"}
    src = save_checkpoint(tmp_path / "src", model, parser, meta)
    ckpt = load_checkpoint(src)
    before = _digest(src)
    weights = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    seqs = [_seq(f"n{i}", [4, 5, 6], False) for i in range(4)] + [_seq("a", [4, 7, 6], True)]
    seen: list[float] = []
    out = finetune(ckpt, seqs, RLConfig(episodes=2, k="2", lr=1e-2, batch_size=2), tmp_path / "rl",
                   progress=lambda st: seen.append(st.mean_reward))
    assert isinstance(out, Checkpoint) and len(seen) == 2
    assert _digest(src) == before
    assert all(torch.equal(v, ckpt.model.state_dict()[k]) for k, v in weights.items())
    again = load_checkpoint(tmp_path / "rl")
    assert again.meta["rl_sids"] == ["a", "n0", "n1", "n2", "n3"]
    assert again.meta["train_sids"] == ["t0"]
    assert again.meta["rl"]["episodes"] == 2 and again.meta["rl"]["k_resolved"] == 2
    assert again.meta["rl"]["source_model"] == str(src) and len(again.meta["rl"]["history"]) == 2
    assert again.meta["created"] != "then"
    assert any(not torch.equal(v, again.model.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(BadInput, match="never overwrites"):
        finetune(ckpt, seqs, RLConfig(episodes=1), src)


def test_a_merged_piece_counts_as_its_copies() -> None:
    from logllama_tui.rl import _batches

    cfg = RLConfig(entropy_coef=0.01, gamma=0.9, baseline="position", lr=0.0)
    a, b = ((1, 4, 5), (4, 5, EOS), (False, False, False)), ((1, 6), (6, EOS), (True, True))
    grads = []
    for batch in ([(*a, 2), (*b, 1)], [(*a, 1), (*a, 1), (*b, 1)]):
        model = _tiny()
        stats = rl_step(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, 4, 2, cfg)
        grads.append((torch.cat([p.grad.flatten() for p in model.parameters()]), stats))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert grads[0][1] == pytest.approx(grads[1][1])
    seqs = [_seq("x", [4, 5], False), _seq("y", [4, 5], False), _seq("z", [6], True)]
    got = _batches(seqs, [position_labels(s) for s in seqs], 8, 64, __import__("random").Random(0))
    assert sorted(p[3] for batch in got for p in batch) == [1, 2]


def test_worst_positions_pick_the_least_expected_key_per_row() -> None:
    from logllama_tui.rl import worst_positions

    ranks = torch.tensor([[0, 5, 2, 9], [3, 1, 0, 0], [7, 7, 1, 0]])
    mask = torch.tensor([[True, True, True, False], [False, False, False, False], [True, True, True, True]])
    assert worst_positions(ranks, mask).tolist() == [
        [False, True, False, False], [False, False, False, False], [True, False, False, False]]


def test_focus_worst_rewards_one_position_of_an_anomalous_sequence() -> None:
    cfg = RLConfig(entropy_coef=0.0, gamma=0.0, baseline="none", anomalous_focus="worst")
    model = _tiny()
    piece = ((1, 4, 5, 6), (4, 5, 6, EOS), (True, True, True, True), 1)
    stats = rl_step(model, torch.optim.SGD(model.parameters(), lr=0.0), [piece], 4, 2, cfg)
    assert stats["positions"] == 1.0 and stats["anom"] == 1.0


# -- interrupted runs -------------------------------------------------------------------------
def _source(tmp_path: Path) -> object:
    """A tiny untrained checkpoint over 4 keys, saved and loaded back."""
    from logllama_tui.checkpoint import load_checkpoint, save_checkpoint
    from logllama_tui.model import build_model
    from logllama_tui.parser import LogParser

    parser = LogParser()
    for text in ("open file 1", "read block 2", "close file 3", "error disk 4"):
        parser.learn(Record(source="x", lineno=1, text=text, content=text))
    mcfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)
    torch.manual_seed(0)
    meta = {"arch": "llama", "model_config": to_dict(mcfg), "train_config": {},
            "n_keys": parser.vocab.n_keys, "vocab_size": len(parser.vocab)}
    return load_checkpoint(save_checkpoint(tmp_path / "src", build_model(mcfg, len(parser.vocab)),
                                           parser, meta))


RL_SEQS = [_seq(f"n{i}", [4 + (i * j) % 3 for j in range(2 + i % 4)], False) for i in range(12)] + \
    [_seq(f"a{i}", [4, 7, 6][: 1 + i], True) for i in range(3)]


def test_a_run_stopped_between_episodes_resumes_to_the_same_model(tmp_path: Path) -> None:
    """The sampled action draws from the saved generator, so both RNGs are checked here."""
    ckpt = _source(tmp_path)
    cfg = RLConfig(episodes=3, k="2", lr=1e-2, batch_size=2, action="sampled")
    whole = finetune(ckpt, RL_SEQS, cfg, tmp_path / "whole")

    def stop(st: object) -> None:
        if st.episode == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    saved: list[Path] = []
    with pytest.raises(KeyboardInterrupt):
        finetune(ckpt, RL_SEQS, cfg, tmp_path / "cut", progress=stop, on_interrupt=saved.append)
    assert saved == [tmp_path / "cut"]
    resumed = finetune(ckpt, RL_SEQS, cfg, tmp_path / "cut", resume=True)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.meta["rl"]["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.meta["rl"]["history"]] == strip
    with pytest.raises(BadInput, match="already finished"):
        finetune(ckpt, RL_SEQS, cfg, tmp_path / "cut", resume=True)


def _tensors_without(key: str) -> object:
    def change(run: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(run / "rl_state.safetensors"))
        del tensors[key]
        save_file(tensors, str(run / "rl_state.safetensors"))
    return change


def _scalars(edit: object) -> object:
    def change(run: Path) -> None:
        import json

        state = json.loads((run / "rl_state.json").read_text())
        new = edit(state)  # type: ignore[operator]
        (run / "rl_state.json").write_text(json.dumps(state if new is None else new))
    return change


RL_STATE_CASES = {
    "version 2": _scalars(lambda s: s.update(version=2)),
    "not an object": _scalars(lambda s: [s]),
    "progress extra key": _scalars(lambda s: s["progress"].update({"py/object": "os.system"})),
    "batch a string": _scalars(lambda s: s["progress"].update(batch="2")),
    "totals a list": _scalars(lambda s: s["progress"].update(totals=[1.0])),
    "history longer than the episodes": _scalars(lambda s: s["progress"]["history"].append({})),
    "shuffle too short": _scalars(lambda s: s["progress"]["shuffle"][1].pop()),
    "lr null": _scalars(lambda s: s["param_groups"][0].update(lr=None)),
    "no sampler state": _tensors_without("rng.sample"),
    "no moments": _tensors_without("optim.0.exp_avg"),
}


@pytest.mark.parametrize("case", list(RL_STATE_CASES))
def test_a_tampered_rl_state_is_refused(tmp_path: Path, case: str) -> None:
    from logllama_tui.errors import BadCheckpoint

    ckpt, cfg = _source(tmp_path), RLConfig(episodes=2, k="2", lr=1e-2, batch_size=2)

    def stop(st: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(ckpt, RL_SEQS, cfg, tmp_path / "cut", progress=stop)
    RL_STATE_CASES[case](tmp_path / "cut")  # type: ignore[operator]
    with pytest.raises(BadCheckpoint, match="rl_state|finetune state"):
        finetune(ckpt, RL_SEQS, cfg, tmp_path / "cut", resume=True)


def test_a_second_signal_inside_a_batch_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first signal waits for the batch; a second one stops it midway, and then no state is
    handed on (the batch may be half applied)."""
    import signal

    from logllama_tui import rl

    real = rl.rl_step

    def step(*args: object, **kwargs: object) -> object:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # raises KeyboardInterrupt here, inside the batch
        return real(*args, **kwargs)

    monkeypatch.setattr(rl, "rl_step", step)
    saved: list[Path] = []
    with pytest.raises(KeyboardInterrupt):
        finetune(_source(tmp_path), RL_SEQS, RLConfig(episodes=2, k="2", batch_size=2),
                 tmp_path / "rl", on_interrupt=saved.append)
    assert saved == [] and not (tmp_path / "rl").exists()
