"""Helpers of the fault-injection suite: sizes, HDFS-like lines, CLI runners, a tiny checkpoint.

Sizes are scaled down by default so the suite fits the shared 2-core box; set
LOGLLAMA_FULL_RELIABILITY=1 for the issue's full sizes (200k-line burst, 2M-line memory run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import torch

torch.set_num_threads(1)

FULL = os.environ.get("LOGLLAMA_FULL_RELIABILITY", "") not in ("", "0")
"""Run the issue's full sizes instead of the scaled-down defaults."""
REPO = Path(__file__).resolve().parents[2]

STEPS = ("Receiving block {b} src: /10.0.0.1:50010 dest: /10.0.0.2:50010",
         "Received block {b} of size 67108864 from /10.0.0.1",
         "PacketResponder 1 for block {b} terminating",
         "Verification succeeded for {b}")
START = datetime(2008, 11, 9)
COMPONENTS = ("dfs.DataNode$DataXceiver", "dfs.DataNode$DataXceiver",
              "dfs.DataNode$PacketResponder", "dfs.DataBlockScanner")


def hdfs_line(step: int, block: str, t: int = 0) -> str:
    """One HDFS-format line of step 0..3 of a normal block session, at second t of the log."""
    when = (START + timedelta(seconds=t)).strftime("%y%m%d %H%M%S")  # days roll over too
    return f"{when} 42 INFO {COMPONENTS[step]}: {STEPS[step].format(b=block)}"


def default_sigint() -> None:
    """preexec_fn: give the child SIGINT's default disposition (Ctrl+C raises KeyboardInterrupt).

    A shell starts background jobs with SIGINT ignored, and children inherit that; a test that
    interrupts a child must not depend on how the test run itself was started.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(home: Path | None = None) -> dict[str, str]:
    """Environment for `python -m logllama_tui` subprocesses: one thread, unbuffered, own home."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if home is not None:
        env["LOGLLAMA_HOME"] = str(home)
    return env


def run_cli(args: list[str], cwd: Path | None = None, home: Path | None = None,
            timeout: float = 120, stdin: str | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`logllama ARGS` as a real process (the console entry point's code path)."""
    return subprocess.run([sys.executable, "-m", "logllama_tui", *args], cwd=cwd,
                          env={**cli_env(home), **(extra_env or {})}, capture_output=True,
                          text=True, timeout=timeout,
                          input=stdin if stdin is not None else "")


def build_tiny_checkpoint(out: Path) -> Path:
    """Learn the 4 HDFS step templates and train a 1-layer llama to expect them in order."""
    from logllama_tui.checkpoint import save_checkpoint
    from logllama_tui.config import BOS, EOS, ModelConfig, TrainConfig, WindowConfig, to_dict
    from logllama_tui.formats import get_format
    from logllama_tui.model import build_model
    from logllama_tui.parser import LogParser
    from logllama_tui.records import Line

    torch.manual_seed(0)
    parser = LogParser()
    fmt = get_format("hdfs")
    lines = [Line("train", i + 1, hdfs_line(i % 4, f"blk_{i // 4}", i)) for i in range(8)]
    keys = [parser.learn(r).key for r in fmt.records(lines)][:4]
    cfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32,
                      max_positions=64)
    vocab = len(parser.vocab)
    model = build_model(cfg, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    ids, tgt = torch.tensor([[BOS, *keys]]), torch.tensor([[*keys, EOS]])
    model.train()
    for _ in range(40):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab), tgt.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meta = {"arch": "llama", "model_config": to_dict(cfg), "train_config": to_dict(TrainConfig()),
            "vocab_size": vocab, "n_keys": parser.vocab.n_keys, "format": "hdfs",
            "log_format": "hdfs", "window": to_dict(WindowConfig()),
            "detect": {"k": "1", "k_resolved": 1}}
    return save_checkpoint(out, model, parser, meta)
