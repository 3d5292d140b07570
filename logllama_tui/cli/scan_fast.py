"""The body of `logllama scan` on two cores: parse here, score in a child (logllama_tui.fastscan).

Same output as the single-process loop in scan.py (same verdicts, same summary, same records);
this process never imports torch or transformers, so start-up costs only the parser's imports.
While lines stream in, what open sessions gained goes to the worker every TICK_LINES lines, so
their prefixes are ranked before they close (fastscan.Grower).
"""

from __future__ import annotations

from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import DetectConfig

WORKERS = 2
"""Scoring processes for engines ranked at the close only (Scorer): at a burst both score. The
prefix trie keeps its state in one process, which scores while this one parses."""
FAST_BUFFER = 4096
"""Finished sequences sent to the scorer at once (the trie keeps what it ran across buffers, so
the size only sets how many frames a burst of closes takes)."""


def open_light(model: str | None, paths: list[str], fmt: str, max_line_bytes: int) -> tuple[Any, Any, dict[str, Any]]:
    """(checkpoint dir, parser, meta) of --model, read without torch (the worker loads the weights)."""
    from logllama_tui.checkpoint import load_parser, read_meta, resolve_model
    from logllama_tui.cli.scan import model_or_default

    path = resolve_model(model_or_default(model, paths, fmt, max_line_bytes))
    meta = read_meta(path)
    parser = load_parser(path, meta)
    return path, parser, meta


def run(ctx: click.Context, paths: list[str], kwargs: dict[str, Any]) -> None:
    """`scan` with parsing and scoring overlapped (see the module docstring)."""
    from logllama_tui.cli.scan import (
        Report,
        choose_k,
        data_settings,
        finish,
        load_labels,
        open_sink,
        progress_bar,
        sequences,
    )
    from logllama_tui.fastscan import TICK_LINES, Grower, ScoreWorker, score_stream

    path, parser, meta = open_light(kwargs["model"], paths, kwargs["fmt"], kwargs["max_line_bytes"])
    n_keys = parser.vocab.n_keys
    k, how = choose_k(kwargs["k"], n_keys, meta)

    def start() -> ScoreWorker:
        return ScoreWorker(str(path), k, DetectConfig().candidates, kwargs["device"])

    worker = start()
    workers = [worker]
    grower = Grower(worker)

    def more_workers() -> None:  # before the first close: a Scorer engine gets a second process
        if not worker.wait_ready().get("grows"):
            grower.active = False
            workers.extend(start() for _ in range(WORKERS - 1))

    def tick(pipe: Any) -> None:
        if grower.active:
            found = open_sequences(pipe)
            if found is not None:
                grower.tick(found)

    sink = None
    try:
        fmt, window_cfg = data_settings(ctx, kwargs, meta)
        labels = load_labels(kwargs["labels"])
        sink = open_sink(kwargs["output"]) if kwargs["output"] else None
        report = Report(parser, k)
        stats = {"lines": 0}
        with progress_bar() as bar:
            task = bar.add_task("scanning")
            seqs = sequences(paths, fmt, options.reader_config(kwargs), parser, window_cfg, labels,
                             stats, tick, TICK_LINES)
            told = False
            for scored in score_stream(grower.closed(seqs), workers, k,
                                       max(FAST_BUFFER, kwargs["batch_size"]), prepare=more_workers):
                told = told or _tell(worker, path, meta, n_keys, k, how, fmt, window_cfg)
                report.add(scored, sink)  # type: ignore[arg-type]
                bar.update(task, description=report.progress(stats["lines"]))
            if not told:  # no sequence at all: a model that cannot load is still an error
                _tell(worker, path, meta, n_keys, k, how, fmt, window_cfg)
        if sink is not None:
            sink.commit()
    finally:
        for w in workers:
            w.close()
        if sink is not None:
            sink.discard()
    finish(report, stats["lines"], labels is not None, kwargs)


def open_sequences(pipe: Any) -> Any:
    """A session windower's open sequences, most recently fed first (None for other windows:
    their sequences close as the lines go by)."""
    recent = getattr(pipe.windower, "recent", None)
    return recent() if recent is not None else None


def _tell(worker: Any, path: Any, meta: dict[str, Any], n_keys: int, k: int, how: str, fmt: str,
          window_cfg: Any) -> bool:
    """The Model and K lines on stderr, once the worker says where the model runs."""
    hello = worker.wait_ready()
    click.echo(f"Model: {path} ({meta.get('arch', '?')}, {n_keys} keys) on "
               f"{hello.get('device', '?')} [{hello.get('engine', '?')}]", err=True)
    click.echo(f"K = {k} of {n_keys + 1} candidates ({how}); format {fmt}; window "
               f"{window_cfg.mode}", err=True)
    return True


__all__ = ["open_light", "open_sequences", "run"]
