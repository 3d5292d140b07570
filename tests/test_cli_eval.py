"""`logllama eval`: the paper's protocol on held-out sequences, --json, --compare, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_cli_scan import train_tiny, write_hdfs

from logllama_tui.checkpoint import read_meta
from logllama_tui.cli import cli

torch.set_num_threads(1)
KEYS = {"precision", "recall", "f1", "tp", "fp", "fn", "tn", "sequences", "excluded_training"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    folder = tmp_path_factory.mktemp("eval")
    log, lab, _ = write_hdfs(folder)
    llama = train_tiny(folder, log, lab, train_fraction=0.5)
    lstm = train_tiny(folder, log, lab, train_fraction=0.25, arch="deeplog", name="lstm")
    return log, lab, llama, lstm


def test_eval_json_excludes_training_sequences(models) -> None:
    log, lab, llama, _ = models
    meta = read_meta(llama)
    used = len(meta["split"]["train_sids"]) + len(meta["split"]["val_sids"])
    result = CliRunner().invoke(cli, ["eval", str(log), "--model", str(llama), "--labels",
                                      str(lab), "--k", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures) == KEYS
    assert used == 20 and figures["excluded_training"] == used
    assert figures["sequences"] == 42 - used
    assert figures["tp"] + figures["fn"] == 2  # both anomalies are in the test set
    assert figures["tp"] + figures["fp"] + figures["fn"] + figures["tn"] == figures["sequences"]
    assert figures["recall"] == 1.0 and figures["fp"] == 0 and figures["f1"] == 1.0
    assert f"excluded {used} sequences" in result.stderr


def test_eval_warns_when_no_training_sequence_is_in_the_data(models, tmp_path) -> None:
    """Window ids hold the path as given: data named otherwise would be tested on what it trained on."""
    import shutil

    log, lab, llama, _ = models
    moved = tmp_path / "moved"
    shutil.copytree(llama, moved)
    meta = json.loads((moved / "logllama.json").read_text())
    for key in ("train_sids", "val_sids"):
        meta["split"][key] = [f"elsewhere/{sid}" for sid in meta["split"][key]]
    (moved / "logllama.json").write_text(json.dumps(meta))
    for model, warned in ((llama, False), (moved, True)):
        result = CliRunner().invoke(cli, ["eval", str(log), "--model", str(model), "--labels",
                                          str(lab), "--k", "1", "--json"])
        assert result.exit_code == 0, result.output
        assert ("none of the 20 sequences" in result.stderr) is warned, result.stderr


def test_eval_without_the_end_key_misses_the_short_session(models) -> None:
    log, lab, llama, _ = models
    result = CliRunner().invoke(cli, ["eval", str(log), "--model", str(llama), "--labels",
                                      str(lab), "--k", "1", "--json", "--ignore-end"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["tp"] == 1 and figures["fn"] == 1  # only the unseen template is caught


def test_eval_k_auto_calibrates_on_the_validation_sequences(models) -> None:
    log, lab, llama, _ = models
    result = CliRunner().invoke(cli, ["eval", str(log), "--model", str(llama), "--labels",
                                      str(lab), "--k", "auto"])
    assert result.exit_code == 0, result.output
    assert "auto: 0.01 FPR on 2 validation sequences" in result.stderr
    assert "Precision" in result.stdout and "Excluded (trained on)" in result.stdout


def test_compare_two_models_on_the_same_sequences(models) -> None:
    log, lab, llama, lstm = models
    result = CliRunner().invoke(cli, ["eval", "--compare", str(llama), str(lstm), str(log),
                                      "--labels", str(lab), "--k", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    assert [r["name"] for r in rows] == [str(llama), str(lstm)]
    union = set()
    for m in (llama, lstm):
        split = read_meta(m)["split"]
        union |= set(split["train_sids"]) | set(split["val_sids"])
    for r in rows:
        assert KEYS <= set(r)
        assert r["excluded_training"] == len(union)
        assert r["sequences"] == 42 - len(union)
    table = CliRunner().invoke(cli, ["eval", "--compare", str(llama), str(lstm), str(log),
                                     "--labels", str(lab)])
    assert table.exit_code == 0, table.output
    assert "lstm" in table.stdout and "F1" in table.stdout


def test_eval_needs_labels_and_a_model(models, tmp_path) -> None:
    log, lab, llama, _ = models
    runner = CliRunner()
    no_labels = runner.invoke(cli, ["eval", str(log), "--model", str(llama)])
    assert no_labels.exit_code == 2 and "eval needs labels" in no_labels.stderr
    other = tmp_path / "other.csv"
    other.write_text("BlockId,Label\nblk_999999,Anomaly\n")
    unmatched = runner.invoke(cli, ["eval", str(log), "--model", str(llama), "--labels", str(other)])
    assert unmatched.exit_code == 2 and "no sequence matched a label" in unmatched.stderr
    no_model = runner.invoke(cli, ["eval", str(log), "--labels", str(lab)])
    assert no_model.exit_code == 2 and "--model" in no_model.stderr
    bad_k = runner.invoke(cli, ["eval", str(log), "--model", str(llama), "--labels", str(lab),
                                "--k", "0"])
    assert bad_k.exit_code == 2 and "out of range" in bad_k.stderr
    assert "Traceback" not in bad_k.output + no_labels.output
