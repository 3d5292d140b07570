"""`logllama tail`: follow live logs and flag each line the model did not expect, as it lands."""

from __future__ import annotations

from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import TailConfig

# textual, torch and transformers are imported inside the function bodies: `--help` stays fast.

_WINDOW_FIELDS = {"window_mode": "mode", "session_regex": "session_regex",
                  "session_timeout": "session_timeout", "window_seconds": "window_seconds",
                  "step_seconds": "step_seconds", "window_size": "window_size", "step": "step"}


@click.command("tail")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@options.model_option()
@options.input_options()
@options.window_options()
@options.k_option()
@options.device_option()
@click.option("--from-start", is_flag=True, help="Replay the files from their first line.")
@click.option("--learn", is_flag=True,
              help="First train a model on what PATH and its rotations (PATH.1, PATH.2.gz, ...) hold "
              "now, saved as --model NAME (default: the file's name), then follow with it.")
@click.option("--learn-epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="With --learn: training epochs.")
@click.option("--plain", is_flag=True, help="No TUI: print flagged lines to stdout.")
@click.option("--json", "as_json", is_flag=True, help="With --plain: one JSON object per line.")
@click.option("--all", "all_lines", is_flag=True, help="With --plain: every line, flagged or not.")
@click.option("--feedback", type=click.Path(dir_okay=False), default=None,
              help="JSONL the x/c keys append to [default: under the user data dir].")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), show_default=True,
              default=TailConfig().poll_interval, help="Seconds between file checks (polling).")
@click.option("--batch-ms", type=click.IntRange(min=1), default=TailConfig().batch_ms,
              show_default=True, help="Lines landing within this many ms are scored together.")
@click.pass_context
def command(ctx: click.Context, paths: tuple[str, ...], **kwargs: Any) -> None:
    """Follow log files live and point at the lines that break the pattern.

    Follows files, globs and directories (new files are picked up) and stdin (-), through
    rotation and truncation. Each line is ranked among the model's predicted next keys as soon
    as it lands. Keys: n/N next/previous anomaly, a anomalies only, / search, x false positive,
    c confirmed anomaly, e export, f follow, ? help, q quit.

    \b
    Examples:
      logllama tail /var/log/syslog --model mysys
      logllama tail 'logs/*.log' --model hdfs --from-start
      journalctl -f | logllama tail - --model mysys --plain --json
      logllama tail --learn /var/log/syslog        # learn it (and its rotations), then follow
    """
    from logllama_tui.live_engine import EngineSpec

    if kwargs["learn"]:
        kwargs["model"] = _learn(ctx, list(paths), kwargs)
    overrides: dict[str, Any] = {}
    for opt, name in _WINDOW_FIELDS.items():
        source = ctx.get_parameter_source(opt)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            overrides[name] = kwargs[opt]
    if "window_seconds" in overrides and "step_seconds" not in overrides:
        overrides["step_seconds"] = overrides["window_seconds"]
    if "window_size" in overrides and "step" not in overrides:
        overrides["step"] = overrides["window_size"]
    spec = EngineSpec(model=kwargs["model"], fmt=kwargs["fmt"], device=kwargs["device"],
                      k=kwargs["k"], window_overrides=overrides, paths=list(paths))
    tail_cfg = TailConfig(from_start=kwargs["from_start"], poll_interval=kwargs["poll_interval"],
                          batch_ms=kwargs["batch_ms"])
    reader = options.reader_config(kwargs)
    if kwargs["as_json"] or kwargs["all_lines"]:
        kwargs["plain"] = True
    if kwargs["plain"]:
        run_plain(list(paths), spec, tail_cfg, reader, kwargs["as_json"], kwargs["all_lines"])
        return
    from logllama_tui.tui.app import make_app

    stdin = _stdin_for_tui() if "-" in paths else None
    app = make_app(list(paths), spec, tail_cfg, reader, feedback=kwargs["feedback"], stdin=stdin)
    app.run()


def _learn(ctx: click.Context, paths: list[str], kwargs: dict[str, Any]) -> str:
    """Train on PATH... and their rotated siblings with `logllama train`; return the model's name."""
    import contextlib
    import sys
    from pathlib import Path

    from logllama_tui.cli.train import command as train_command
    from logllama_tui.errors import BadInput
    from logllama_tui.readers import rotated_siblings

    if "-" in paths:
        raise BadInput("--learn reads what the files hold now; it cannot learn from stdin (-)")
    files = [f for p in paths for f in rotated_siblings(p)]
    name = kwargs["model"] or Path(paths[0]).name.split(".")[0] or "learned"
    click.echo(f"Learning {len(files)} file(s) into model {name!r}: {', '.join(files)}", err=True)
    passed = {k: kwargs[k] for k in ("fmt", "max_line_bytes", "sim_th", "depth", "max_children",
                                     "no_masks", *_WINDOW_FIELDS, "device", "target_fpr")}
    if kwargs["k"] is not None:
        passed["k"] = kwargs["k"]
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only verdicts (--plain --json)
        ctx.invoke(train_command, data=tuple(files), out=name, epochs=kwargs["learn_epochs"], **passed)
    return name


def _stdin_for_tui() -> Any:
    """Move piped stdin to another descriptor for the follower; give the TUI the terminal."""
    import os
    import sys

    from logllama_tui.errors import BadInput

    if sys.stdin is None or sys.stdin.isatty():
        raise BadInput("- reads stdin, but stdin is the terminal: pipe logs in "
                       "(journalctl -f | logllama tail -) or name the files to follow")
    try:
        tty = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        raise BadInput("stdin is a pipe and there is no terminal for the TUI: add --plain") from None
    stream = os.fdopen(os.dup(0), "rb", buffering=0)
    os.dup2(tty, 0)  # Textual reads keys from descriptor 0
    os.close(tty)
    return stream


def run_plain(paths: list[str], spec: Any, tail_cfg: TailConfig, reader: Any, as_json: bool,
              all_lines: bool, until: Any = None) -> None:
    """No TUI: follow, score, print; stop at stdin's end, on SIGINT/SIGTERM or once `until()`
    is true (`logllama demo`), after flushing what the files hold."""
    import json
    import signal
    import sys
    import threading

    from logllama_tui.follow import Follower
    from logllama_tui.live_engine import open_engine
    from logllama_tui.live_worker import LiveWorker

    def notice(level: str, message: str) -> None:
        click.echo(f"{'Warning' if level == 'warning' else 'Note' if level == 'information' else 'Error'}"
                   f": {message}", err=True)

    out = sys.stdout
    broken = threading.Event()

    def sink(verdicts: list[Any]) -> None:
        if broken.is_set():
            return
        chunks = []
        for v in verdicts:
            if not (all_lines or v.anomalous):
                continue
            chunks.append(json.dumps(v.to_json(), ensure_ascii=False) if as_json else _text(v))
        if chunks:
            try:
                out.write("\n".join(chunks) + "\n")
                out.flush()
            except BrokenPipeError:
                broken.set()

    stop = threading.Event()
    handoff = threading.Lock()
    pending: list[Any] = []
    worker_box: list[LiveWorker] = []

    def on_lines(lines: list[Any]) -> None:
        with handoff:
            if worker_box:
                worker_box[0].submit(lines)
            else:
                pending.append(lines)

    follower = Follower(paths, on_lines, tail_cfg, reader, on_notice=notice, on_eof=stop.set)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        follower.start()  # positions are taken now; lines read while the model loads wait
        engine = open_engine(spec, notice)
        click.echo(f"Model: {engine.info['path']} ({engine.info['arch']}, {engine.info['n_keys']} "
                   f"keys, K={engine.info['k']}) on {engine.device}; format {engine.info['format']}",
                   err=True)
        worker = LiveWorker(lambda: engine, sink, notice, batch_ms=tail_cfg.batch_ms)
        with handoff:
            for lines in pending:
                worker.submit(lines)
            pending.clear()
            worker_box.append(worker)
        worker.start()
        while not stop.wait(0.2) and not broken.is_set():
            if until is not None and until():
                break
        follower.stop(final_pass=True)  # what the files hold now is scored and printed
        worker.stop(timeout=None)
    finally:
        follower.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    if broken.is_set():
        sys.exit(0)


def _text(v: Any) -> str:
    """One flagged line as text: where, why, and what was expected instead."""
    why = "unseen template" if v.kind == "unseen" else f"rank {v.rank} >= K={v.k}" if v.anomalous \
        else f"rank {v.rank}" if v.rank is not None else "no sequence"
    lines = [f"{v.source}:{v.lineno}: [{why}] {v.text}"]
    for key, prob, template in v.candidates[:3]:
        lines.append(f"    expected {key} ({prob:.1%}): {template}")
    return "\n".join(lines)
