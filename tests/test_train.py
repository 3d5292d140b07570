"""Training: the split, framing, de-duplication, batching, the schedule, resume, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from logllama_tui.batching import (
    BucketBatchSampler,
    Example,
    collate,
    frame,
    make_examples,
    split_sequences,
    weighted_loss,
)
from logllama_tui.checkpoint import load_checkpoint, read_meta
from logllama_tui.cli import cli
from logllama_tui.config import BOS, EOS, PAD, UNK, ModelConfig, TrainConfig
from logllama_tui.errors import BadInput
from logllama_tui.parser import LogParser
from logllama_tui.records import Record, Sequence
from logllama_tui.train import get_lr, train
from logllama_tui.train_state import SCALARS, TENSORS

torch.set_num_threads(1)
TINY = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)
FAST = TrainConfig(epochs=3, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu", threads=1)


def make_parser(n: int = 6) -> LogParser:
    parser = LogParser()
    for i in range(n):
        parser.learn(Record("t.log", i + 1, f"E{i}", f"event {i}", event_id=f"E{i}"))
    return parser


def make_sequences(n: int = 60, seed: int = 0) -> list[Sequence]:
    """Cyclic key patterns of varied length; every 10th sequence labelled anomalous."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        length = rng.randint(2, 9)
        out.append(Sequence(f"s{j}", [4 + (k % 4) for k in range(length)], [], label=True if j % 10 == 0 else None))
    return out


# -- pure pieces ------------------------------------------------------------------------------
def test_get_lr_warms_up_then_decays_to_a_tenth() -> None:
    lrs = [get_lr(s, total_steps=100, lr=1.0, warmup_steps=10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.55)
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_split_is_seeded_and_never_trains_on_anomalies() -> None:
    seqs = make_sequences(100)
    train_s, val_s, rest = split_sequences(seqs, train_fraction=0.5, val_fraction=0.2, seed=3)
    assert (len(train_s), len(val_s), len(rest)) == (36, 9, 55)  # 90 normal: draw 45, 9 held back
    assert not any(s.label for s in train_s + val_s)
    assert {s.sid for s in train_s + val_s + rest} == {s.sid for s in seqs}
    assert [s.sid for s in split_sequences(seqs, 0.5, 0.2, 3)[0]] == [s.sid for s in train_s]
    assert [s.sid for s in split_sequences(seqs, 0.5, 0.2, 4)[0]] != [s.sid for s in train_s]
    all_train, all_val, all_rest = split_sequences(seqs, None, 0.1, 0)
    assert (len(all_train), len(all_val)) == (81, 9) and all(s.label for s in all_rest)


def test_frame_adds_bos_and_eos_and_chunks_long_sequences() -> None:
    assert frame([5, 6, 7], max_len=8) == [Example((BOS, 5, 6, 7), (5, 6, 7, EOS))]
    assert frame([5, 6, 7, 8, 9], max_len=4) == [
        Example((BOS, 5, 6, 7), (5, 6, 7, 8)),
        Example((8, 9), (9, EOS)),
    ]


def test_dedup_weights_give_exactly_the_loss_of_the_repeated_data() -> None:
    seqs = [Sequence("a", [4, 5]), Sequence("b", [4, 5]), Sequence("c", [4, 5]), Sequence("d", [6])]
    examples = make_examples(seqs, max_len=16)
    assert sorted((e.inputs, e.weight) for e in examples) == [((BOS, 4, 5), 3), ((BOS, 6), 1)]
    torch.manual_seed(0)
    logits_of = {(BOS, 4, 5): torch.randn(3, 8), (BOS, 6): torch.randn(2, 8)}

    def loss(exs: list[Example]) -> float:
        batch = collate(exs)
        logits = torch.zeros(len(exs), batch["input_ids"].shape[1], 8)
        for i, e in enumerate(exs):
            logits[i, : len(e)] = logits_of[e.inputs]
        total, n = weighted_loss(logits, batch["targets"], batch["weights"])
        return (total / n).item()

    assert loss(examples) == pytest.approx(loss(make_examples(seqs, 16, dedup=False)), rel=1e-6)


def test_collate_pads_right_and_ignores_pad_targets() -> None:
    batch = collate([Example((BOS, 4), (4, EOS), 2), Example((BOS,), (EOS,))])
    assert batch["input_ids"].tolist() == [[BOS, 4], [BOS, PAD]]
    assert batch["targets"].tolist() == [[4, EOS], [EOS, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["weights"].tolist() == [2.0, 1.0]


def test_buckets_group_similar_lengths_and_reshuffle_per_epoch() -> None:
    lengths = [1, 9, 2, 8, 3, 7, 4, 6]
    sampler = BucketBatchSampler(lengths, batch_size=2, seed=0)
    batches = list(sampler)
    assert sorted(sorted(lengths[i] for i in b) for b in batches) == [[1, 2], [3, 4], [6, 7], [8, 9]]
    assert list(sampler) == batches  # same epoch, same order
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        orders.add(tuple(map(tuple, sampler)))
    assert len(orders) > 1


# -- the loop ---------------------------------------------------------------------------------
def test_train_learns_and_writes_a_complete_checkpoint(tmp_path: Path) -> None:
    seqs = make_sequences()
    events: list[dict] = []
    ckpt = train(seqs, make_parser(), TINY, dataclasses.replace(FAST, epochs=4), tmp_path / "m",
                 {"format": "raw"}, progress=events.append)
    history = ckpt.meta["metrics"]["history"]
    assert len(history) == 4 and history[-1]["val_loss"] < history[0]["val_loss"]
    assert ckpt.meta["complete"] is True and ckpt.meta["format"] == "raw"
    assert not (tmp_path / "m" / TENSORS).exists()  # the resumable state goes once the run is done
    split = ckpt.meta["split"]
    anomalous = {s.sid for s in seqs if s.label}
    assert not anomalous & set(split["train_sids"] + split["val_sids"])
    assert len(split["train_sids"]) + len(split["val_sids"]) == 54
    assert ckpt.meta["detect"]["k_resolved"] == 4  # scoring.resolve_k("0.5", 6 keys) -> 7 candidates
    assert {e["event"] for e in events} == {"step", "epoch", "done"}
    assert ckpt.meta["metrics"]["keys_per_s"] > 0


def test_deeplog_trains_through_the_same_loop(tmp_path: Path) -> None:
    cfg = ModelConfig(arch="deeplog", embed_dim=8, lstm_hidden=16, lstm_layers=1)
    ckpt = train(make_sequences(), make_parser(), cfg, FAST, tmp_path / "d",
                 {"detect": {"k": "auto", "target_fpr": 0.1}})
    assert ckpt.meta["arch"] == "deeplog" and ckpt.model.lstm.hidden_size == 16
    detect = ckpt.meta["detect"]  # K calibrated on the validation slice by scoring.calibrate_k
    assert detect["k"] == "auto" and 1 <= detect["k_resolved"] <= 7


def test_resume_reaches_the_result_of_an_uninterrupted_run(tmp_path: Path) -> None:
    seqs, cfg = make_sequences(), dataclasses.replace(FAST, epochs=4, patience=10, dedup=False)
    whole = train(seqs, make_parser(), TINY, cfg, tmp_path / "whole", {})

    def interrupt(event: dict) -> None:
        if event["event"] == "step" and event["epoch"] == 3 and event["batch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(seqs, make_parser(), TINY, cfg, tmp_path / "cut", {}, progress=interrupt)
    assert read_meta(tmp_path / "cut")["complete"] is False
    assert json.loads((tmp_path / "cut" / SCALARS).read_text())["progress"]["batch"] == 2
    resumed = train(seqs, make_parser(), TINY, cfg, tmp_path / "cut", {}, resume=True)
    for name, tensor in whole.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], tensor, atol=1e-6), name
    assert resumed.meta["metrics"]["epochs"] == 4
    with pytest.raises(BadInput, match="already finished"):
        train(seqs, make_parser(), TINY, cfg, tmp_path / "cut", {}, resume=True)


def test_a_second_signal_inside_a_batch_keeps_the_last_consistent_save(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seqs, cfg = make_sequences(), dataclasses.replace(FAST, epochs=4, patience=10, dedup=False)
    whole = train(seqs, make_parser(), TINY, cfg, tmp_path / "whole", {})
    armed: list[bool] = []
    real = torch.optim.AdamW.step

    def step_then_cut(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        out = real(self, *args, **kwargs)
        if armed:  # epoch 3's second batch is applied, its progress not yet counted
            raise KeyboardInterrupt
        return out

    def arm(event: dict) -> None:
        if event["event"] == "step" and event["epoch"] == 3 and event["batch"] == 1:
            armed.append(True)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_cut)
    with pytest.raises(KeyboardInterrupt):
        train(seqs, make_parser(), TINY, cfg, tmp_path / "cut", {}, progress=arm)
    monkeypatch.setattr(torch.optim.AdamW, "step", real)
    progress = json.loads((tmp_path / "cut" / SCALARS).read_text())["progress"]
    assert (progress["epoch"], progress["batch"]) == (2, 0)  # the save at the end of epoch 2
    resumed = train(seqs, make_parser(), TINY, cfg, tmp_path / "cut", {}, resume=True)
    for name, tensor in whole.model.state_dict().items():  # no batch applied twice
        assert torch.allclose(resumed.model.state_dict()[name], tensor, atol=1e-6), name


def test_no_normal_sequences_is_bad_input(tmp_path: Path) -> None:
    seqs = [Sequence("a", [4, 5], label=True), Sequence("b", [5], label=True)]
    with pytest.raises(BadInput, match="no normal sequences"):
        train(seqs, make_parser(), TINY, FAST, tmp_path / "m", {})
    assert not (tmp_path / "m").exists()


# -- the CLI ----------------------------------------------------------------------------------
def _log(tmp_path: Path) -> Path:
    lines = []
    for i in range(240):
        lines += [f"connection from 10.0.0.{i % 7} opened", f"user u{i} logged in",
                  f"served {i * 3} bytes", f"connection from 10.0.0.{i % 7} closed"]
    path = tmp_path / "app.log"
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_ARGS = ["--format", "raw", "--window", "count", "--window-size", "8", "--layers", "1",
             "--heads", "2", "--hidden", "16", "--epochs", "2", "--threads", "1", "--device", "cpu"]


def test_cli_train_then_models_list_show_rm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLAMA_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(_log(tmp_path)), *TINY_ARGS])
    assert result.exit_code == 0, result.output
    assert "Saved llama model" in result.output and "keys/s" in result.output
    ckpt = load_checkpoint("app")  # the default name: the first file's stem
    assert ckpt.parser.vocab.n_keys >= 3 and ckpt.meta["model_config"]["head_dim"] == 8
    listed = runner.invoke(cli, ["models"])
    assert listed.exit_code == 0 and "app" in listed.output and "llama" in listed.output
    shown = runner.invoke(cli, ["models", "show", "app"])
    assert json.loads(shown.output)["n_keys"] == ckpt.parser.vocab.n_keys
    assert runner.invoke(cli, ["models", "rm", "app"]).exit_code == 0
    assert "No models" in runner.invoke(cli, ["models"]).output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cuda"], "no CUDA GPU"),
        (["--k", "many"], "is not a number"),
        (["--k", "99"], "out of range"),
        (["--labels", "LABELS"], "match none of the"),
        (["--out", "OUTFILE"], "is a file"),
        (["--resume", "--out", "fresh"], "nothing to resume"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      extra: list[str], message: str) -> None:
    if torch.cuda.is_available() and "cuda" in extra:
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("LOGLLAMA_HOME", str(tmp_path / "home"))
    (tmp_path / "labels.csv").write_text("BlockId,Label\nblk_1,Normal\nblk_2,Anomaly\n")
    (tmp_path / "outfile").write_text("not a dir")
    extra = [{"LABELS": str(tmp_path / "labels.csv"), "OUTFILE": str(tmp_path / "outfile")}.get(a, a) for a in extra]
    result = CliRunner().invoke(cli, ["train", str(_log(tmp_path)), *TINY_ARGS, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_keys_never_in_a_training_sequence_are_unseen_at_detection(tmp_path: Path) -> None:
    # The parser knows six templates (E0..E5 -> keys 4..9); the training sequences use keys 4..7.
    parser = make_parser()
    ckpt_dir = tmp_path / "m"
    train(make_sequences(), parser, TINY, dataclasses.replace(FAST, epochs=1), ckpt_dir, {"format": "raw"})
    assert read_meta(ckpt_dir)["split"]["train_keys"] == [4, 5, 6, 7]
    loaded = load_checkpoint(ckpt_dir).parser
    seen = loaded.match(Record("t.log", 1, "E1", "event 1", event_id="E1"))
    parsed_only = loaded.match(Record("t.log", 2, "E5", "event 5", event_id="E5"))
    assert seen.key == 5
    assert parsed_only.key == UNK and parsed_only.template == "E5"  # the template stays shown
