"""The body of `logllama train` (imported only when the command runs: it pulls in torch)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import click

from logllama_tui.checkpoint import fingerprint, out_path, read_meta, unfinished_meta
from logllama_tui.cli import options
from logllama_tui.cli.train import default_out, format_from_notice, model_config, train_config
from logllama_tui.config import DetectConfig, to_dict
from logllama_tui.errors import BadCheckpoint, BadInput


def check_out(out: Path, resume: bool) -> None:
    """Refuse an --out we must not write: a file, or a directory that is not a checkpoint."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a model name or a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / "logllama.json").is_file():
        raise BadInput(f"--out {out} is a non-empty directory that is not a logllama checkpoint; "
                       "choose another name or an empty directory")
    if resume:
        unfinished_meta(out, "train")


def read_meta_quiet(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, or {} when it is unreadable."""
    try:
        return read_meta(path)
    except BadCheckpoint:
        return {}


def check_k(spec: str | None) -> str:
    """The K spec to record; a malformed one fails now, before any data is read."""
    if spec is None:
        return DetectConfig().k
    text = spec.strip().lower()
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"--k {spec!r} is not a number: give a count such as 9, a fraction such as "
                       "0.5, or auto") from None
    if not value > 0 or (value > 1 and not value.is_integer()):
        raise BadInput(f"--k {spec} is out of range: use a fraction in (0, 1], a count >= 1, or auto")
    return text


def is_main_process() -> bool:
    """False in the extra processes of `accelerate launch` (they train but stay quiet)."""
    return os.environ.get("RANK", "0") == "0"


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, quiet=not is_main_process())


def run(data: list[str], kwargs: dict[str, Any]) -> None:
    """Read, window and label DATA, train, and say where the checkpoint went."""
    from logllama_tui.labels import load_session_labels
    from logllama_tui.parser import LogParser
    from logllama_tui.pipeline import collect_sequences
    from logllama_tui.readers import expand_paths
    from logllama_tui.scoring import resolve_k
    from logllama_tui.train import pick_device, train

    model_cfg, train_cfg = model_config(kwargs), train_config(kwargs)
    pick_device(train_cfg.device)  # `--device cuda` without CUDA fails before any work
    k_spec = check_k(kwargs["k"])
    out = out_path(kwargs["out"] or default_out(data))
    check_out(out, kwargs["resume"])
    files = expand_paths(data)
    if not kwargs["resume"] and (out / "logllama.json").is_file():
        unfinished = not read_meta_quiet(out).get("complete", True)
        click.echo(f"Note: {out} holds an {'unfinished run (--resume continues it)' if unfinished else 'existing model'}"
                   "; it is replaced after the first epoch", err=True)
    labels = load_session_labels(kwargs["labels"]) if kwargs["labels"] else None
    window_cfg = options.window_config(kwargs)
    console = _stderr_console()
    formats_seen: list[str] = []

    def notice(message: str) -> None:
        name = format_from_notice(message)
        if name:
            formats_seen.append(name)
        console.print(message, style="dim", markup=False, highlight=False)  # paths are not markup

    t0 = time.perf_counter()
    parser = LogParser(options.parser_config(kwargs))
    with console.status("Reading and parsing..."):
        sequences = collect_sequences(files, kwargs["fmt"], parser, window_cfg, labels, learn=True,
                                      reader=options.reader_config(kwargs), notice=notice)
    n_anom = sum(1 for s in sequences if s.label is True)
    n_norm = sum(1 for s in sequences if s.label is False)
    if not sequences:
        raise BadInput(f"no sequences in {', '.join(data)}: the files hold no log lines we could window")
    if labels is not None and n_anom + n_norm == 0:
        raise BadInput(f"the labels in {kwargs['labels']} match none of the {len(sequences)} sequences "
                       f"(e.g. {sequences[0].sid!r}); check --labels and --session-regex")
    if n_anom == len(sequences):
        raise BadInput(f"all {len(sequences)} sequences are labelled anomalous: there is nothing "
                       "normal to learn from; add normal data")
    console.print(f"{len(sequences)} sequences ({n_norm} normal, {n_anom} anomalous, "
                  f"{len(sequences) - n_norm - n_anom} unlabelled), {parser.vocab.n_keys} templates "
                  f"in {time.perf_counter() - t0:.1f} s", highlight=False)
    if k_spec != "auto":
        resolve_k(k_spec, parser.vocab.n_keys)  # a count larger than the vocabulary fails here
    fmt = formats_seen[0] if formats_seen else kwargs["fmt"]
    meta = {
        "format": fmt, "log_format": fmt, "window": to_dict(window_cfg),
        "labels": kwargs["labels"], "data_files": [fingerprint(f) for f in files],
        "detect": {"k": k_spec, "target_fpr": kwargs["target_fpr"]},
    }
    signal.signal(signal.SIGTERM, _sigterm)
    with _ProgressView(console) as view:
        try:
            ckpt = train(sequences, parser, model_cfg, train_cfg, out, meta, progress=view.update,
                         resume=kwargs["resume"])
        except KeyboardInterrupt:
            if (out / "logllama.json").is_file() and is_main_process():
                console.print(f"Interrupted: the run so far is in {out}; continue it with --resume "
                              f"--out {out}", highlight=False)
            raise
    if is_main_process():
        _summary(ckpt)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # saved and reported like Ctrl+C


def _summary(ckpt: Any) -> None:
    """What was trained and where it went (stdout: the scriptable part)."""
    m, meta = ckpt.meta.get("metrics", {}), ckpt.meta
    det = meta.get("detect", {})
    click.echo(f"Saved {meta['arch']} model ({meta.get('params', 0):,} params, {meta['n_keys']} keys) "
               f"to {ckpt.path}")
    click.echo(f"  epochs {m.get('epochs')} (best {m.get('best_epoch')}), val loss {m.get('best_val_loss')}, "
               f"{m.get('keys_per_s', 0):,.0f} keys/s, {m.get('seconds', 0):.1f} s; "
               f"K = {det.get('k_resolved')} (k={det.get('k')})")
    click.echo(f"  trained on {len(meta['split']['train_sids'])} sequences, validated on "
               f"{len(meta['split']['val_sids'])}; try: logllama scan FILE --model {ckpt.path}")


class _ProgressView:
    """A rich progress bar on stderr: epoch, batch, loss, keys/s, ETA."""

    def __init__(self, console: Any):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[kps]:,.0f} keys/s"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self.task: Any = None
        self.label = ""
        self.console = console

    def __enter__(self) -> _ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, event: dict[str, Any]) -> None:
        """Turn one train() progress event into the bar (and a line per finished epoch)."""
        kind = event.get("event")
        if kind == "step":
            label = f"{event['epoch']}/{event['epochs']}"
            if self.task is None:
                self.task = self.progress.add_task("train", total=event["batches"], epoch=label,
                                                   loss=event["loss"], kps=0.0)
            elif self.label != label:
                self.progress.reset(self.task, total=event["batches"], epoch=label,
                                    loss=event["loss"], kps=0.0)
            self.label = label
            self.progress.update(self.task, completed=event["batch"], loss=event["loss"],
                                 kps=event["keys_per_s"])
        elif kind == "epoch":
            val = event.get("val_loss")
            self.progress.console.print(
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, val loss "
                f"{'-' if val is None else f'{val:.4f}'}, {event['keys_per_s']:,.0f} keys/s, "
                f"{event['seconds']:.1f} s", highlight=False)
