"""`logllama finetune` end to end on a tiny HDFS-like log: labels, feedback and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from logllama_tui.cli import cli

torch.set_num_threads(1)

HEAD = "081109 2036{:02d} 148 INFO "
STEPS = [
    "dfs.DataNode$DataXceiver: Receiving block {b} src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
    "dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /mnt/hadoop/part-00001. {b}",
    "dfs.DataNode$PacketResponder: PacketResponder 1 for block {b} terminating",
    "dfs.DataNode$PacketResponder: Received block {b} of size 67108864 from /10.250.10.6",
]


def _write(folder: Path) -> tuple[Path, Path]:
    """30 normal sessions and 6 anomalous ones (cut short), with a BlockId,Label CSV."""
    lines, labels = [], ["BlockId,Label"]
    for i in range(36):
        blk = f"blk_{1000 + i}"
        steps = [s.format(b=blk) for s in STEPS]
        if i >= 30:
            steps = steps[: 1 + i % 3]
        lines += [HEAD.format(i % 60) + s for s in steps]
        labels.append(f"{blk},{'Anomaly' if i >= 30 else 'Normal'}")
    log, lab = folder / "tiny.log", folder / "labels.csv"
    log.write_text("\n".join(lines) + "\n")
    lab.write_text("\n".join(labels) + "\n")
    return log, lab


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from logllama_tui.config import ModelConfig, TrainConfig, WindowConfig, to_dict
    from logllama_tui.labels import load_session_labels
    from logllama_tui.parser import LogParser
    from logllama_tui.pipeline import collect_sequences
    from logllama_tui.train import train

    folder = tmp_path_factory.mktemp("finetune")
    log, lab = _write(folder)
    parser, window = LogParser(), WindowConfig()
    seqs = collect_sequences([str(log)], "hdfs", parser, window, load_session_labels(lab), learn=True)
    model_cfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)
    train_cfg = TrainConfig(epochs=3, batch_size=8, lr=0.02, device="cpu", threads=1,
                            train_fraction=0.3, warmup_steps=1)
    meta = {"log_format": "hdfs", "window": to_dict(window), "detect": {"k": "0.5", "target_fpr": 0.01}}
    model = train(seqs, parser, model_cfg, train_cfg, folder / "model", meta).path
    return log, lab, model


def _run(args: list[str], home: Path) -> object:
    return CliRunner().invoke(cli, ["finetune", *args], env={"LOGLLAMA_HOME": str(home)})


def _one_error(result: object, needle: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    err = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert err[-1].startswith("Error: ") and needle in err[-1], err
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_finetune_with_labels_writes_a_new_model(setup, tmp_path: Path) -> None:
    log, lab, model = setup
    before = (model / "model.safetensors").read_bytes()
    out = tmp_path / "rl"
    result = _run([str(log), "--model", str(model), "--labels", str(lab), "--episodes", "2",
                   "--rl-fraction", "1.0", "--lr", "0.01", "--out", str(out)], tmp_path)
    assert result.exit_code == 0, result.output
    assert "episode 2/2: reward" in result.stderr
    assert f"Saved finetuned model to {out}" in result.stdout
    assert (model / "model.safetensors").read_bytes() == before
    meta = json.loads((out / "logllama.json").read_text())
    split = json.loads((model / "logllama.json").read_text())["split"]
    used = set(split["train_sids"]) | set(split["val_sids"])
    assert meta["rl_sids"] and not set(meta["rl_sids"]) & used
    assert len(meta["rl_sids"]) == 36 - len(used)  # every unseen labelled session at fraction 1
    assert meta["rl"]["episodes"] == 2 and meta["rl"]["source_model"] == str(model)
    assert meta["rl"]["anomalous_sequences"] == 6


def test_finetune_with_feedback_marks(setup, tmp_path: Path) -> None:
    from logllama_tui.feedback import FeedbackRecord, append_feedback, model_fingerprint

    log, _lab, model = setup
    text = log.read_text().splitlines()
    fb = tmp_path / "fb.jsonl"
    for line, verdict in ((1, "false_positive"), (len(text), "anomaly")):
        append_feedback(fb, FeedbackRecord(file=str(log), line=line, text=text[line - 1], key=4,
                                           template="t", verdict=verdict, model_name="model",
                                           model_fingerprint=model_fingerprint(model)))
    result = _run([str(log), "--model", str(model), "--feedback", str(fb), "--episodes", "1",
                   "--out", str(tmp_path / "fbrl")], tmp_path)
    assert result.exit_code == 0, result.output
    assert "2 marks matched, 0 not found" in result.stderr
    assert len(json.loads((tmp_path / "fbrl" / "logllama.json").read_text())["rl_sids"]) == 2


def test_no_labels_explains_how_to_get_them(setup, tmp_path: Path) -> None:
    log, _lab, model = setup
    _one_error(_run([str(log), "--model", str(model), "--out", str(tmp_path / "x")], tmp_path),
               "finetuning needs labels")


def test_episodes_must_be_positive(setup, tmp_path: Path) -> None:
    log, lab, model = setup
    _one_error(_run([str(log), "--model", str(model), "--labels", str(lab), "--episodes", "0",
                     "--out", str(tmp_path / "x")], tmp_path), "at least 1 episode")


def test_feedback_from_another_model_or_with_unknown_lines(setup, tmp_path: Path) -> None:
    from logllama_tui.feedback import FeedbackRecord, append_feedback

    log, _lab, model = setup
    other = tmp_path / "other.jsonl"
    append_feedback(other, FeedbackRecord(file=str(log), line=1, text="x", key=4, template="t",
                                          verdict="anomaly", model_name="bgl",
                                          model_fingerprint="sha256:" + "0" * 64))
    args = [str(log), "--model", str(model), "--out", str(tmp_path / "x")]
    _one_error(_run([*args, "--feedback", str(other)], tmp_path), "made against model 'bgl'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"version": 1, "verdict": "maybe"}\n')
    _one_error(_run([*args, "--feedback", str(bad)], tmp_path), "bad.jsonl:1: not a logllama feedback record")
    _one_error(_run([*args, "--feedback", str(tmp_path / "none.jsonl")], tmp_path), "no such feedback file")


def test_model_without_parser_state_and_out_equal_to_input(setup, tmp_path: Path) -> None:
    log, lab, model = setup
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "parser.json").unlink()
    _one_error(_run([str(log), "--model", str(broken), "--labels", str(lab), "--out",
                     str(tmp_path / "x")], tmp_path), "parser.json is missing")
    _one_error(_run([str(log), "--model", str(model), "--labels", str(lab), "--out", str(model)],
                    tmp_path), "never overwrites")


# -- interrupting and resuming ----------------------------------------------------------------
TOL = 1e-4
"""Per-episode metrics of a resumed run vs an uninterrupted one (one thread: equal in practice)."""
RL_ARGS = ["--episodes", "3", "--rl-fraction", "1.0", "--lr", "0.01", "--batch-size", "1"]


def _args(setup: tuple[Path, Path, Path], out: Path, *extra: str) -> list[str]:
    log, lab, model = setup
    return [str(log), "--model", str(model), "--labels", str(lab), *RL_ARGS, "--out", str(out), *extra]


def _history(out: Path) -> list[dict[str, float]]:
    meta = json.loads((out / "logllama.json").read_text())
    return [{k: v for k, v in h.items() if k != "seconds"} for h in meta["rl"]["history"]]


def _tree(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "rl"
    result = _run(_args(setup, out), out.parent)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cut(setup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A run that got SIGINT while its 6th batch ran: 4 batches an episode, so episode 2, batch 2."""
    import signal

    from logllama_tui import rl

    out = tmp_path_factory.mktemp("cut") / "rl"
    source = _tree(setup[2])
    real, calls = rl.rl_step, []

    def step(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 6:
            signal.raise_signal(signal.SIGINT)  # noted now, acted on once this batch is applied
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rl, "rl_step", step)
        result = _run(_args(setup, out), out.parent)
    assert _tree(setup[2]) == source  # the input model is never written to
    return out, result


def test_interrupt_saves_a_resumable_run(cut: tuple[Path, object]) -> None:
    from logllama_tui.checkpoint import load_checkpoint

    out, result = cut
    assert result.exit_code == 130, result.output  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert f"continue it with --resume --out {out}" in err and err.strip().endswith("Interrupted.")
    assert "Traceback" not in err and "episode 1/3" in err and "episode 2/3" not in err
    meta = json.loads((out / "logllama.json").read_text())
    assert meta["complete"] is False and len(meta["rl"]["history"]) == 1
    state = json.loads((out / "rl_state.json").read_text())
    assert (state["progress"]["episode"], state["progress"]["batch"]) == (1, 2)
    assert not list(out.glob("*.pt")) and (out / "rl_state.safetensors").is_file()
    load_checkpoint(out)  # the weights so far load as a model


def test_resume_reaches_the_uninterrupted_result(setup, cut: tuple[Path, object], reference: Path,
                                                 tmp_path: Path) -> None:

    from logllama_tui.checkpoint import load_checkpoint

    out = tmp_path / "rl"
    shutil.copytree(cut[0], out)
    result = _run(_args(setup, out, "--resume"), tmp_path)
    assert result.exit_code == 0, result.output
    assert "episode 1/3" not in result.stderr and "episode 3/3" in result.stderr
    got, want = _history(out), _history(reference)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys() and all(abs(g[k] - w[k]) <= TOL for k in g), (got, want)
    a, b = load_checkpoint(out).model.state_dict(), load_checkpoint(reference).model.state_dict()
    assert max(float((a[n] - b[n]).abs().max()) for n in a) <= TOL
    meta = json.loads((out / "logllama.json").read_text())
    assert meta["complete"] is True and not (out / "rl_state.json").exists()
    assert meta["rl_sids"] == json.loads((reference / "logllama.json").read_text())["rl_sids"]


@pytest.mark.parametrize(("case", "needle"), [
    ("fresh", "nothing to resume"),
    ("settings", "--lr 0.01 (now 0.02); --seed 0 (now 3)"),
    ("data", "other RL sequences than now"),
    ("episodes", "has started episode 2; give --episodes 2 or more"),
    ("finished", "already finished"),
    ("no state", "has lost its finetune state"),
    ("train run", "holds no unfinished finetune run"),
    ("corrupt", "rl_state.json is corrupt"),
])
def test_resume_refuses_what_it_cannot_continue(setup, cut: tuple[Path, object], reference: Path,
                                               tmp_path: Path, case: str, needle: str) -> None:
    out = tmp_path / "rl"
    shutil.copytree(reference if case == "finished" else cut[0], out)
    args = _args(setup, out, "--resume")
    if case == "fresh":
        shutil.rmtree(out)
    elif case == "settings":
        args += ["--lr", "0.02", "--seed", "3"]
    elif case == "data":
        lab = tmp_path / "labels.csv"
        lab.write_text(setup[1].read_text().replace("blk_1030,Anomaly", "blk_1030,Normal"))
        args[args.index("--labels") + 1] = str(lab)
    elif case == "episodes":
        args += ["--episodes", "1"]
    elif case == "no state":
        (out / "rl_state.json").unlink()
    elif case == "train run":  # an unfinished `logllama train` run is not ours to continue
        meta = json.loads((out / "logllama.json").read_text())
        (out / "logllama.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "rl"}))
    elif case == "corrupt":
        state = json.loads((out / "rl_state.json").read_text())
        state["progress"]["shuffle"][1][0] = -1
        (out / "rl_state.json").write_text(json.dumps(state))
    before = _tree(out) if out.exists() else None
    _one_error(_run(args, tmp_path), needle)
    assert (_tree(out) if out.exists() else None) == before


def test_an_unfinished_out_without_resume_is_replaced(setup, cut: tuple[Path, object],
                                                     reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "rl"
    shutil.copytree(cut[0], out)
    result = _run(_args(setup, out), tmp_path)
    assert result.exit_code == 0, result.output
    assert f"Note: {out} holds an unfinished run (--resume continues it)" in result.stderr
    assert _history(out) == _history(reference) and not (out / "rl_state.json").exists()
