"""`logllama demo`: replay a sample log with real anomalies into a temp file and tail it live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

SAMPLES = Path(__file__).resolve().parent.parent.parent / "sample_logs"
DEFAULT_SAMPLE = "hdfs_sample.log"


@click.command("demo")
@click.option("--sample", type=click.Path(dir_okay=False), default=None,
              help=f"Log to replay [default: sample_logs/{DEFAULT_SAMPLE}].")
@click.option("--rate", type=click.FloatRange(min=0.1, max=100_000), default=40.0,
              show_default=True, help="Lines written per second.")
@click.option("--model", "-m", default=None, metavar="NAME_OR_DIR",
              help="Model to score with [default: the shipped model for the sample's format].")
@click.option("--plain", is_flag=True, help="No TUI: print flagged lines (as `tail --plain`).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Stop replaying after this many lines.")
def command(sample: str | None, rate: float, model: str | None, plain: bool,
            limit: int | None) -> None:
    """Watch detection live: replay a sample log with real anomalies and tail it.

    A background thread copies the sample, line by line at a steady rate, into a file in a
    temporary directory; `logllama tail` follows that file with the shipped model. Quit with q
    (or Ctrl+C); the temporary file is removed.

    \b
    Examples:
      logllama demo
      logllama demo --rate 200
      logllama demo --plain --limit 2000
    """
    import shutil
    import tempfile
    import threading

    from logllama_tui.config import ReaderConfig, TailConfig
    from logllama_tui.errors import BadInput
    from logllama_tui.live_engine import EngineSpec

    source = Path(sample) if sample else SAMPLES / DEFAULT_SAMPLE
    if not source.is_file():
        raise BadInput(f"sample log {source} not found: pass --sample FILE")
    lines = source.read_bytes().splitlines(keepends=True)
    if limit is not None:
        lines = lines[:limit]
    if not lines:
        raise BadInput(f"sample log {source} is empty: pass another --sample FILE")
    workdir = Path(tempfile.mkdtemp(prefix="logllama-demo-"))
    target = workdir / source.name
    target.touch()
    stop = threading.Event()
    writer = threading.Thread(target=_replay, args=(lines, target, rate, stop), daemon=True)
    spec = EngineSpec(model=model, fmt="auto", device="auto", k=None, window_overrides={},
                      paths=[str(source)])
    tail_cfg = TailConfig(from_start=True)
    click.echo(f"Replaying {source} into {target} at {rate:g} lines/s", err=True)
    try:
        writer.start()
        if plain:
            from logllama_tui.cli.tail import run_plain

            run_plain([str(target)], spec, tail_cfg, ReaderConfig(), False, False,
                      until=lambda: not writer.is_alive())
        else:
            from logllama_tui.tui.app import make_app

            make_app([str(target)], spec, tail_cfg, ReaderConfig()).run()
    finally:
        stop.set()
        writer.join(timeout=2)
        shutil.rmtree(workdir, ignore_errors=True)


def _replay(lines: list[bytes], target: Path, rate: float, stop: Any) -> None:
    """Append `lines` to `target` at `rate` lines/s, in small bursts, until done or stopped."""
    import time

    burst = max(1, int(rate // 20))  # ~20 writes a second, whatever the rate
    start = time.monotonic()
    with target.open("ab") as out:
        for i in range(0, len(lines), burst):
            if stop.is_set():
                return
            out.write(b"".join(lines[i:i + burst]))
            out.flush()
            delay = start + (i + burst) / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return

