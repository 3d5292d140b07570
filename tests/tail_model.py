"""A tiny trained checkpoint and HDFS-like lines for the tail tests (seconds to build, 1 thread)."""

from __future__ import annotations

from pathlib import Path

from logllama_tui.config import BOS, EOS, TrainConfig, WindowConfig, to_dict

STEPS = ("Receiving block {b} src: /10.0.0.1:50010 dest: /10.0.0.2:50010",
         "Received block {b} of size 67108864 from /10.0.0.1",
         "PacketResponder 1 for block {b} terminating",
         "Verification succeeded for {b}")
COMPONENTS = ("dfs.DataNode$DataXceiver", "dfs.DataNode$DataXceiver",
              "dfs.DataNode$PacketResponder", "dfs.DataBlockScanner")
UNSEEN = "Exception in receiveBlock for block {b} java.io.IOException: Connection reset by peer"


def hdfs_line(step: int | str, block: str, t: int = 0) -> str:
    """One HDFS-format line: step 0..3 of a normal session, or "unseen"."""
    if step == "unseen":
        return f"081109 20{t % 10000:04d} 42 WARN dfs.DataNode$DataXceiver: {UNSEEN.format(b=block)}"
    assert isinstance(step, int)
    return f"081109 20{t % 10000:04d} 42 INFO {COMPONENTS[step]}: {STEPS[step].format(b=block)}"


def session(block: str, steps: tuple[int | str, ...] = (0, 1, 2, 3)) -> list[str]:
    return [hdfs_line(s, block, i) for i, s in enumerate(steps)]


def build_checkpoint(out: Path, k: int = 1) -> Path:
    """Learn the 4 templates, train a 1-layer llama to expect them in order, save it."""
    import torch

    from logllama_tui.checkpoint import save_checkpoint
    from logllama_tui.config import ModelConfig
    from logllama_tui.formats import get_format
    from logllama_tui.model import build_model
    from logllama_tui.parser import LogParser
    from logllama_tui.records import Line

    torch.set_num_threads(1)
    torch.manual_seed(0)
    parser = LogParser()
    fmt = get_format("hdfs")
    lines = [Line("train", i + 1, t) for i, t in enumerate(session("blk_1") + session("blk_2"))]
    keys = [parser.learn(r).key for r in fmt.records(lines)][:4]
    cfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)
    vocab = len(parser.vocab)
    model = build_model(cfg, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    ids = torch.tensor([[BOS, *keys]])
    tgt = torch.tensor([[*keys, EOS]])
    model.train()
    for _ in range(60):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab), tgt.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meta = {"arch": "llama", "model_config": to_dict(cfg), "train_config": to_dict(TrainConfig()),
            "vocab_size": vocab, "n_keys": parser.vocab.n_keys, "format": "hdfs",
            "log_format": "hdfs", "window": to_dict(WindowConfig()),
            "detect": {"k": str(k), "k_resolved": k}}
    return save_checkpoint(out, model, parser, meta)


_CACHE: dict[str, Path] = {}


def cached_checkpoint() -> Path:
    """One checkpoint per test process (shared by the tail test modules)."""
    if "ckpt" not in _CACHE:
        import atexit
        import shutil
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="logllama-tail-test-"))
        atexit.register(shutil.rmtree, base, True)
        _CACHE["ckpt"] = build_checkpoint(base / "tiny")
    return _CACHE["ckpt"]
