"""`accelerate launch` with 2 CPU processes (gloo DDP) trains a model that loads and scores.

accelerate 1.x runs `--cpu --num_processes 2` as ONE process unless MPI is set up; two local CPU
processes come from its torchrun launcher (`--multi_gpu`) with `--device cpu` on our side, which
makes Accelerator(cpu=True) join a gloo process group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logllama_tui.checkpoint import load_checkpoint
from logllama_tui.config import BOS, FIRST_KEY
from logllama_tui.records import Sequence
from logllama_tui.scoring import Scorer

torch.set_num_threads(1)


def _accelerate() -> list[str]:
    exe = Path(sys.executable).parent / "accelerate"
    return [str(exe)] if exe.exists() else [shutil.which("accelerate") or "accelerate"]


@pytest.mark.slow
def test_two_cpu_processes_train_a_loadable_model(tmp_path: Path) -> None:
    lines = []
    for i in range(200):
        lines += [f"connection from 10.0.0.{i % 7} opened", f"user u{i} logged in",
                  f"served {i * 3} bytes", f"socket closed for 10.0.0.{i % 7} after timeout"]
    log = tmp_path / "app.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    env = {**os.environ, "LOGLLAMA_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    cmd = [*_accelerate(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "logllama_tui", "train", str(log),
           "--format", "raw", "--window", "count", "--window-size", "8", "--layers", "1", "--heads", "2",
           "--hidden", "16", "--epochs", "2", "--threads", "1", "--device", "cpu", "--no-dedup",
           "--batch-size", "16", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Saved llama model") == 1  # only the main process reports and writes
    ckpt = load_checkpoint(out)
    assert ckpt.meta["metrics"]["processes"] == 2 and ckpt.meta["complete"] is True
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left
    n_keys = ckpt.parser.vocab.n_keys
    keys = [FIRST_KEY + i % n_keys for i in range(6)]
    ids = torch.tensor([[BOS, *keys], [BOS, *keys[::-1]]])  # [B=2, T=7]
    with torch.no_grad():
        logits = ckpt.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (2, 7, len(ckpt.parser.vocab))
    [scored] = Scorer(ckpt.model, n_keys, 2, "cpu", 8).score([Sequence("x", keys)])
    assert len(scored.verdicts) == 6
