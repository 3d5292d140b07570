"""Checkpoint directories: round trip, names, atomic saves, and refusing anything unsafe or broken."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from logllama_tui.checkpoint import (
    fingerprint,
    list_models,
    load_checkpoint,
    models_dir,
    remove_model,
    resolve_model,
    save_checkpoint,
)
from logllama_tui.config import ModelConfig, TrainConfig, to_dict
from logllama_tui.errors import BadCheckpoint, BadInput
from logllama_tui.model import build_model
from logllama_tui.parser import LogParser
from logllama_tui.records import Record

torch.set_num_threads(1)
DEEPLOG = ModelConfig(arch="deeplog", embed_dim=8, lstm_hidden=16, lstm_layers=1)
LLAMA = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)


def make_parser(n: int = 5) -> LogParser:
    parser = LogParser()
    for i in range(n):
        parser.learn(Record("t.log", i + 1, f"E{i}", f"event {i}", event_id=f"E{i}", template=f"event {i}"))
    return parser


def write(path: Path, cfg: ModelConfig = DEEPLOG, parser: LogParser | None = None) -> tuple[torch.nn.Module, LogParser]:
    parser = parser or make_parser()
    torch.manual_seed(0)
    model = build_model(cfg, len(parser.vocab))
    meta = {"arch": cfg.arch, "model_config": to_dict(cfg), "train_config": to_dict(TrainConfig()),
            "vocab_size": len(parser.vocab), "n_keys": parser.vocab.n_keys, "format": "hdfs",
            "detect": {"k": "0.5", "k_resolved": 3}, "metrics": {"best_val_loss": 1.25}}
    save_checkpoint(path, model, parser, meta)
    return model, parser


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOGLLAMA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("cfg", [DEEPLOG, LLAMA], ids=["deeplog", "llama"])
def test_round_trip_gives_the_same_logits(tmp_path: Path, cfg: ModelConfig) -> None:
    model, parser = write(tmp_path / "ck", cfg)
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", "logllama.json", "model.safetensors", "parser.json"]
    ckpt = load_checkpoint(tmp_path / "ck")
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        want = model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        got = ckpt.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.equal(want, got)
    assert not ckpt.model.training
    assert ckpt.parser.vocab.names == parser.vocab.names
    assert ckpt.meta["checkpoint"] == "logllama-checkpoint" and ckpt.meta["format"] == "hdfs"


def test_llama_checkpoint_loads_with_transformers_too(tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    model, _ = write(tmp_path / "ck", LLAMA)
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "ck", local_files_only=True, use_safetensors=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(hf.state_dict()[name], tensor), name


def test_names_live_under_models_dir(home: Path) -> None:
    assert models_dir() == home / "models"
    write(models_dir() / "hdfs")
    assert resolve_model("hdfs") == home / "models" / "hdfs"
    [info] = list_models()
    assert (info.name, info.arch, info.keys, info.k, info.error) == ("hdfs", "deeplog", 5, 3, None)
    assert info.metrics["best_val_loss"] == 1.25 and info.size > 0
    with pytest.raises(BadInput, match="not a model name"):
        remove_model("../hdfs")
    assert remove_model("hdfs") == home / "models" / "hdfs"
    assert list_models() == []
    with pytest.raises(BadCheckpoint, match="no model 'hdfs'"):
        resolve_model("hdfs")
    with pytest.raises(BadInput, match="no model named"):
        remove_model("hdfs")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    write(tmp_path / "ck")

    def boom(path: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", build_model(DEEPLOG, 9), make_parser(), {}, extra={"x": boom})
    assert load_checkpoint(tmp_path / "ck").meta["vocab_size"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dir left behind


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    write(tmp_path / "ck")
    os.replace(tmp_path / "ck", tmp_path / ".ck.old")  # as if killed right after the first rename
    assert load_checkpoint(tmp_path / "ck").path == tmp_path / "ck"


@pytest.mark.parametrize("name", ["model.bin", "optimizer.pt", "state.pkl", "x.pth"])
def test_pickle_files_are_refused_and_never_run(tmp_path: Path, name: str) -> None:
    write(tmp_path / "ck")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # unpickling this would create the marker file
            return (open, (str(marker), "w"))

    (tmp_path / "ck" / name).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BadCheckpoint, match=f"refusing to load pickle file .*{name}"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_a_pickle_posing_as_safetensors_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "ck")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "ck" / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BadCheckpoint, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(BadCheckpoint, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ck")


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "ck")
    other = build_model(DEEPLOG, 20).state_dict()  # a 20-key model's weights under a 9-key config
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(BadCheckpoint, match="shape"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(checkpoint_version=99), "format version 99"),
        (lambda m: m.pop("model_config"), "lacks 'model_config'"),
        (lambda m: m.update(vocab_size="9"), "wrong type"),
        (lambda m: m.update(vocab_size=12), "the parser has 9 keys but the model 12"),
        (lambda m: m.update(checkpoint="something-else"), "not a logllama checkpoint"),
    ],
)
def test_bad_metadata_is_refused(tmp_path: Path, edit, message: str) -> None:
    write(tmp_path / "ck")
    f = tmp_path / "ck" / "logllama.json"
    meta = json.loads(f.read_text())
    edit(meta)
    f.write_text(json.dumps(meta))
    with pytest.raises(BadCheckpoint, match=message):
        load_checkpoint(tmp_path / "ck")


def test_missing_files_and_corrupt_json_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "ck")
    (tmp_path / "ck" / "parser.json").write_text("{not json")
    with pytest.raises(BadCheckpoint):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "parser.json").unlink()
    with pytest.raises(BadCheckpoint, match="parser.json is missing"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadCheckpoint, match="is a file"):
        load_checkpoint(tmp_path / "file")


def test_fingerprint_notices_a_change(tmp_path: Path) -> None:
    f = tmp_path / "a.log"
    f.write_bytes(b"x" * 3_000_000)
    before = fingerprint(f)
    assert before["size"] == 3_000_000 and len(before["sha256"]) == 64
    f.write_bytes(b"x" * 2_999_999 + b"y")  # only the last byte differs
    assert fingerprint(f)["sha256"] != before["sha256"]
