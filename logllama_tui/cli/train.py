"""`logllama train`: learn what normal looks like in some logs and save a named checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import ModelConfig, TrainConfig

# torch, transformers, accelerate and the pipeline are imported inside the function: `--help`
# must answer without paying seconds for them.

_M, _T = ModelConfig(), TrainConfig()
_FORMAT_NOTICE = re.compile(r"^.*: format (\S+) \(")


@click.command("train")
@click.argument("data", nargs=-1, required=True)
@options.input_options()
@options.window_options()
@options.labels_option()
@click.option("--train-fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Train on this seeded fraction of the normal sequences (the paper: 0.1) "
              "[default: all of them but the validation slice].")
@click.option("--val-fraction", type=click.FloatRange(0.0, 0.9), default=_T.val_fraction,
              show_default=True, help="Share of the training draw held back for early stopping and --k auto.")
@click.option("--epochs", type=click.IntRange(min=1), default=_T.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_T.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=_T.lr, show_default=True,
              help="Peak learning rate (warmup, then cosine decay).")
@click.option("--patience", type=click.IntRange(min=1), default=_T.patience, show_default=True,
              help="Epochs without validation improvement before stopping.")
@click.option("--seed", type=int, default=_T.seed, show_default=True)
@options.device_option()
@click.option("--threads", type=click.IntRange(min=0), default=_T.threads, show_default=True,
              help="CPU threads per process (0: one; more only helps big models on idle cores).")
@click.option("--arch", type=click.Choice(["llama", "deeplog"]), default=_M.arch, show_default=True,
              help="llama (LogLLaMA) or deeplog (the 2-layer LSTM baseline).")
@click.option("--layers", type=click.IntRange(min=1), default=None,
              help=f"Decoder layers [default: {_M.n_layers}] (deeplog: LSTM layers [{_M.lstm_layers}]).")
@click.option("--heads", type=click.IntRange(min=1), default=None, help=f"Attention heads [default: {_M.n_heads}].")
@click.option("--hidden", type=click.IntRange(min=2), default=None,
              help=f"Hidden size [default: {_M.hidden}] (deeplog: LSTM size [{_M.lstm_hidden}]).")
@click.option("--no-dedup", is_flag=True, help="Train on repeated sequences one by one instead of weighting them.")
@click.option("--out", "-o", "out", default=None, metavar="NAME_OR_DIR",
              help="A model name (saved under the user data dir) or a directory [default: the first file's name].")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@options.k_option()
def command(data: tuple[str, ...], **kwargs: Any) -> None:
    """Train a model on the normal sequences of DATA (files, dirs, globs, .gz, or -).

    Labelled anomalies are never trained on; unlabelled data counts as normal. A checkpoint is
    written atomically after every epoch, so an interrupted run continues with --resume.

    \b
    Examples:
      logllama train /var/log/syslog* --out mysys
      logllama train HDFS.log --labels anomaly_label.csv --train-fraction 0.1 --out hdfs
      logllama train HDFS.log --labels anomaly_label.csv --arch deeplog --out hdfs-deeplog
      accelerate launch --multi_gpu --num_processes 2 -m logllama_tui train HDFS.log --out hdfs
    """
    from logllama_tui.cli.train_run import run

    run(list(data), kwargs)


def model_config(kwargs: dict[str, Any]) -> ModelConfig:
    """ModelConfig from --arch/--layers/--heads/--hidden; head_dim stays even for RoPE."""
    import dataclasses

    arch, layers, heads, hidden = kwargs["arch"], kwargs["layers"], kwargs["heads"], kwargs["hidden"]
    if arch == "deeplog":
        return dataclasses.replace(_M, arch=arch, lstm_layers=layers or _M.lstm_layers,
                                   lstm_hidden=hidden or _M.lstm_hidden)
    cfg = dataclasses.replace(_M, arch=arch, n_layers=layers or _M.n_layers)
    if heads is None and hidden is None:
        return cfg
    heads, hidden = heads or _M.n_heads, hidden or _M.hidden
    head_dim = max(2, hidden // heads)
    head_dim += head_dim % 2  # RoPE rotates pairs of dimensions: an odd head_dim is rejected
    return dataclasses.replace(cfg, n_heads=heads, hidden=hidden, head_dim=head_dim,
                               intermediate=max(cfg.intermediate * hidden // _M.hidden, 4))


def train_config(kwargs: dict[str, Any]) -> TrainConfig:
    """TrainConfig from the options."""
    import dataclasses

    return dataclasses.replace(
        _T, epochs=kwargs["epochs"], batch_size=kwargs["batch_size"], lr=kwargs["lr"],
        patience=kwargs["patience"], seed=kwargs["seed"], device=kwargs["device"],
        threads=kwargs["threads"], train_fraction=kwargs["train_fraction"],
        val_fraction=kwargs["val_fraction"], dedup=not kwargs["no_dedup"],
    )


def default_out(data: list[str]) -> str:
    """The model name derived from the first data file: HDFS_dev.log -> hdfs_dev."""
    first = data[0]
    if first == "-":
        return "stdin"
    name = Path(first.rstrip("/")).name
    for suffix in (".gz", ".bz2", ".xz", ".log", ".csv", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-").lower()
    return name or "model"


def format_from_notice(message: str) -> str | None:
    """The format name in a pipeline notice such as 'x.log: format hdfs (header matches)'."""
    m = _FORMAT_NOTICE.match(message)
    return m.group(1) if m else None
