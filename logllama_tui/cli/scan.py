"""`logllama scan`: score archived log files and list every key the model did not expect."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections import Counter
from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import RESERVED_NAMES, UNK, DetectConfig

# torch, transformers and the pipeline are imported inside the functions: `--help` stays fast.

SCAN_BUFFER = 1024
"""Finished sequences scored together (bounded memory; big enough to batch well)."""
TOP_TEMPLATES = 5


# -- glue shared with `eval` (imported from there inside its body) ------------------------------
def explicit(ctx: click.Context, name: str) -> bool:
    """True when the user gave option `name` (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def checkpoint_format(meta: dict[str, Any]) -> str | None:
    """The log format a checkpoint was trained on, whichever key train.py stored it under."""
    for key in ("log_format", "data_format", "input_format"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    reader = meta.get("reader")
    if isinstance(reader, dict) and isinstance(reader.get("format"), str):
        return reader["format"]
    return None


def sniff_paths(paths: list[str], max_line_bytes: int) -> str:
    """The format `--format auto` would choose for the first file (for finding the shipped model)."""
    from logllama_tui.config import ReaderConfig
    from logllama_tui.formats import sniff_format
    from logllama_tui.readers import expand_paths, iter_lines
    from logllama_tui.sniff import SNIFF_LINES

    files = expand_paths(paths)
    if files[0] == "-":
        return "raw"
    head: list[str] = []
    for line in iter_lines(files[0], ReaderConfig(max_line_bytes=max_line_bytes)):
        head.append(line.text)
        if len(head) >= SNIFF_LINES:
            break
    return sniff_format(head, files[0])


def model_or_default(model: str | None, paths: list[str], fmt: str, max_line_bytes: int) -> str:
    """--model, or the shipped model for the data's format (sniffed when `fmt` is auto)."""
    from logllama_tui.errors import BadInput
    from logllama_tui.resolve import default_model_for

    if model is not None:
        return model
    name = fmt if fmt != "auto" else sniff_paths(paths, max_line_bytes)
    found = default_model_for(name)
    if found is None:
        raise BadInput(f"no --model given and no shipped model for format {name}; train one "
                       "with `logllama train FILE... --out NAME` and pass --model NAME")
    return str(found)


def open_model(model: str | None, paths: list[str], fmt: str, max_line_bytes: int,
               device: str) -> Any:
    """Load --model (or the shipped model for the data's format) and say which on stderr."""
    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.scoring import pick_device

    dev = pick_device(device)
    ckpt = load_checkpoint(model_or_default(model, paths, fmt, max_line_bytes), str(dev))
    click.echo(f"Model: {ckpt.path} ({ckpt.meta.get('arch', '?')}, {ckpt.meta.get('n_keys', '?')} "
               f"keys) on {dev}", err=True)
    return ckpt


def data_settings(ctx: click.Context, kwargs: dict[str, Any], meta: dict[str, Any]) -> tuple[str, Any]:
    """The format and WindowConfig: the checkpoint's, overridden by what the user gave."""
    import dataclasses

    from logllama_tui.config import WindowConfig, from_dict

    trained = checkpoint_format(meta)
    fmt = kwargs["fmt"]
    if fmt == "auto" and trained:
        fmt = trained
    elif trained and fmt != trained:
        click.echo(f"Warning: the model was trained on format {trained!r}, the data is read as "
                   f"{fmt!r}; expect unseen templates", err=True)
    base = WindowConfig()
    stored = meta.get("window")
    if isinstance(stored, dict):
        try:
            base = from_dict(WindowConfig, stored)
        except (TypeError, ValueError):
            click.echo("Warning: the checkpoint's window settings are unreadable; using defaults",
                       err=True)
    given = options.window_config(kwargs)
    names = {"window_mode": "mode", "session_regex": "session_regex",
             "session_timeout": "session_timeout", "window_seconds": "window_seconds",
             "step_seconds": "step_seconds", "window_size": "window_size", "step": "step"}
    changes = {field: getattr(given, field) for opt, field in names.items() if explicit(ctx, opt)}
    if explicit(ctx, "window_seconds") and not explicit(ctx, "step_seconds"):
        changes["step_seconds"] = given.window_seconds
    if explicit(ctx, "window_size") and not explicit(ctx, "step"):
        changes["step"] = given.window_size
    return fmt, dataclasses.replace(base, **changes)


def detect_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's detection settings ({} when it has none)."""
    value = meta.get("detect")
    return value if isinstance(value, dict) else {}


def choose_k(spec: str | None, n_keys: int, meta: dict[str, Any]) -> tuple[int, str]:
    """K as a count, and how it was chosen: --k, else the checkpoint's, else the paper's 0.5."""
    from logllama_tui.errors import BadInput
    from logllama_tui.resolve import resolve_k

    det = detect_meta(meta)
    resolved = det.get("k_resolved")
    usable = isinstance(resolved, int) and not isinstance(resolved, bool) and 1 <= resolved <= n_keys + 1
    if spec is None or spec.strip().lower() == "auto":
        if usable and (spec is None or str(det.get("k")).lower() == "auto"):
            return resolved, f"the checkpoint's K ({det.get('k', resolved)})"
        if spec is not None:
            raise BadInput("--k auto needs a calibrated checkpoint (train with --k auto) or "
                           "`logllama eval --k auto` on data with the validation sequences")
        stored = det.get("k", DetectConfig().k)
        if str(stored).strip().lower() == "auto":
            stored = DetectConfig().k
        return resolve_k(stored, n_keys), f"k={stored}"
    return resolve_k(spec, n_keys), f"--k {spec}"


def sequences(paths: list[str], fmt: str, reader_cfg: Any, parser: Any, window_cfg: Any,
              session_labels: dict[str, bool] | None, stats: dict[str, int], tick: Any = None,
              every: int = 10_000) -> Any:
    """Finished labelled sequences, streaming through the shared pipeline; counts lines in stats.

    tick(pipeline), if given, runs every `every` lines (the two-core scan reports what open
    sequences gained, so the scorer can rank them before they close).
    """
    import itertools

    from logllama_tui.pipeline import MODE_SAMPLE, iter_files, make_pipeline
    from logllama_tui.windows import resolve_mode

    def notice(text: str) -> None:
        click.echo(text, err=True)

    pipe = None
    left = every  # lines until the next tick
    for _path, log_format, records in iter_files(paths, fmt, reader_cfg, notice):
        if pipe is None:
            head = list(itertools.islice(records, MODE_SAMPLE))
            records = itertools.chain(head, records)
            mode = resolve_mode(window_cfg, log_format.default_window, head)
            stats["mode"] = mode
            pipe = make_pipeline(parser, window_cfg, mode, session_labels, learn=False)
        while True:  # in chunks: Pipeline.feed_many's loop costs less per line than ours
            before = pipe.lines
            done = pipe.feed_many(itertools.islice(records, left))
            fed = pipe.lines - before
            stats["lines"] += fed
            if done:
                yield from done
            left -= fed
            if left:  # the file ran out first (the count goes on across files)
                break
            left = every
            if tick is not None:
                tick(pipe)
    if pipe is not None:
        yield from pipe.flush()


def load_labels(path: str | None) -> dict[str, bool] | None:
    """--labels CSV, or None."""
    if path is None:
        return None
    from logllama_tui.labels import load_session_labels

    return load_session_labels(path)


def progress_bar() -> Any:
    """A rich progress display on stderr (lines and sequences so far)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


# -- output and summary ---------------------------------------------------------------------------
CSV_FIELDS = ("file", "line", "text", "key", "template", "rank", "k", "kind", "sequence",
              "candidates")


class Sink:
    """One record per anomalous key into OUT.jsonl or OUT.csv, via a temp file renamed at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.csv = path.lower().endswith(".csv")
        folder = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.fh, CSV_FIELDS) if self.csv else None
        if self.writer is not None:
            self.writer.writeheader()
        self.done = False

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.writer is not None:
            row = dict(record, candidates=json.dumps(record["candidates"], ensure_ascii=False))
            self.writer.writerow(row)
        else:
            self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        """Flush, fsync and rename into place."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.done = True

    def discard(self) -> None:
        """Remove the temp file unless committed (an error or Ctrl+C leaves nothing half-written)."""
        if not self.done:
            self.fh.close()
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def open_sink(path: str) -> Sink:
    """A Sink for .jsonl/.json/.csv; anything else is BadInput."""
    from logllama_tui.errors import BadInput

    if not path.lower().endswith((".jsonl", ".json", ".csv")):
        raise BadInput(f"--output {path}: use a .jsonl or .csv file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(f"--output {path}: folder {folder} does not exist; create it first")
    try:
        return Sink(path)
    except OSError as exc:
        raise BadInput(f"--output {path}: cannot write there ({exc.strerror})") from None


class Report:
    """Counts verdicts as they stream by, writes the records and prints the summary."""

    def __init__(self, parser: Any, k: int) -> None:
        from logllama_tui.metrics import Confusion

        self.parser, self.k = parser, k
        self.sequences = self.anomalous_sequences = self.anomalous_keys = self.anomalous_ends = 0
        self.unlabelled = 0
        self.flagged: Counter[str] = Counter()  # template text -> times flagged
        self.confusion = Confusion()

    def template(self, key: int) -> str:
        """A key's template text."""
        try:
            return self.parser.template(key)
        except KeyError:
            return f"<key {key}>"

    def line_template(self, key: int, rec: Any) -> str:
        """The template of a flagged line; for an unseen one, what the parser made of the line."""
        if key == UNK and rec is not None:
            return self.parser.match(rec).template
        return self.template(key)

    def record(self, scored: Any, index: int, verdict: Any) -> dict[str, Any]:
        """The output record of one flagged position (index == len(keys): the end)."""
        recs = scored.seq.records
        rec = recs[min(index, len(recs) - 1)] if recs else None
        return {
            "file": rec.source if rec else None, "line": rec.lineno if rec else None,
            "text": rec.text if rec else None, "key": verdict.key,
            "template": self.line_template(verdict.key, rec if index < len(recs) else None),
            "rank": verdict.rank, "k": self.k,
            "kind": verdict.kind, "sequence": scored.seq.sid,
            "candidates": [{"key": c, "template": self.template(c), "prob": round(p, 4)}
                           for c, p in verdict.candidates],
        }

    def add(self, batch: list[Any], sink: Sink | None) -> None:
        """Count (and write) one batch of ScoredSequences."""
        for scored in batch:
            self.sequences += 1
            if scored.seq.label is None:
                self.unlabelled += 1
            else:
                self.confusion.add(scored.anomalous, scored.seq.label)
            if not scored.anomalous:
                continue
            self.anomalous_sequences += 1
            flagged = scored.anomalous_keys()
            if scored.end.anomalous:
                self.anomalous_ends += 1
                flagged.append((len(scored.seq.keys), scored.end))
            for index, verdict in flagged:
                if index < len(scored.seq.keys):
                    self.anomalous_keys += 1
                recs = scored.seq.records
                rec = recs[index] if index < len(recs) else None
                unseen = f"{RESERVED_NAMES[UNK]} " if verdict.key == UNK else ""
                self.flagged[unseen + self.line_template(verdict.key, rec)] += 1
                if sink is not None:
                    sink.write(self.record(scored, index, verdict))

    def progress(self, lines: int) -> str:
        """The progress line."""
        return (f"{lines:,} lines, {self.sequences:,} sequences, "
                f"{self.anomalous_sequences:,} anomalous")

    def print_summary(self, lines: int, labelled: bool) -> None:
        """The summary on stdout."""
        share = self.anomalous_sequences / self.sequences if self.sequences else 0.0
        click.echo(f"Lines:               {lines:,}")
        click.echo(f"Sequences:           {self.sequences:,}")
        click.echo(f"Anomalous sequences: {self.anomalous_sequences:,} ({share:.1%})")
        click.echo(f"Anomalous keys:      {self.anomalous_keys:,}"
                   + (f" (+{self.anomalous_ends:,} sequences ended early)" if self.anomalous_ends
                      else ""))
        if self.flagged:
            click.echo("Most often flagged:")
            for template, count in self.flagged.most_common(TOP_TEMPLATES):
                click.echo(f"  {count:>7,}  {template}")
        if self.confusion.total:
            c = self.confusion
            click.echo(f"Against the labels ({c.total:,} labelled sequences): precision "
                       f"{c.precision:.3f}, recall {c.recall:.3f}, F1 {c.f1:.3f} (TP {c.tp}, "
                       f"FP {c.fp}, FN {c.fn}, TN {c.tn})")
        elif labelled:
            click.echo("No sequence matched a label in --labels.")


# -- the command --------------------------------------------------------------------------------
@click.command("scan")
@click.argument("files", nargs=-1, required=True)
@options.model_option()
@options.input_options()
@options.window_options()
@options.labels_option()
@options.k_option()
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write one record per anomalous key to OUT.jsonl or OUT.csv.")
@click.option("--fail-on-anomaly", is_flag=True, help="Exit with status 1 when anything is flagged.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DetectConfig().batch_size,
              show_default=True, help="Sequences per forward pass.")
@options.device_option()
@click.option("--engine", type=click.Choice(["two-core", "inline"]), default="two-core",
              show_default=True, help="two-core: parse here and score in a second process "
              "(faster); inline: one process.")
@click.pass_context
def command(ctx: click.Context, files: tuple[str, ...], **kwargs: Any) -> None:
    """Score log files and list every line the model did not expect, with what it expected.

    Each key whose rank among the predicted next keys is >= K (or whose template was never seen
    in training) is flagged; the summary goes to stdout, the progress to stderr.

    \b
    Examples:
      logllama scan sample_logs/hdfs_sample.log
      logllama scan app.log* --model mysys --output anomalies.jsonl --fail-on-anomaly
    """
    paths = list(files)
    if kwargs["engine"] == "two-core":
        from logllama_tui.cli import scan_fast

        scan_fast.run(ctx, paths, kwargs)
        return
    ckpt = open_model(kwargs["model"], paths, kwargs["fmt"], kwargs["max_line_bytes"],
                      kwargs["device"])
    n_keys = ckpt.parser.vocab.n_keys
    k, how = choose_k(kwargs["k"], n_keys, ckpt.meta)
    fmt, window_cfg = data_settings(ctx, kwargs, ckpt.meta)
    click.echo(f"K = {k} of {n_keys + 1} candidates ({how}); format {fmt}; window "
               f"{window_cfg.mode}", err=True)
    from logllama_tui.scoring import Scorer

    scorer = Scorer(ckpt.model, n_keys, k, device=next(ckpt.model.parameters()).device,
                    batch_size=kwargs["batch_size"], n_candidates=DetectConfig().candidates)
    labels = load_labels(kwargs["labels"])
    sink = open_sink(kwargs["output"]) if kwargs["output"] else None
    report = Report(ckpt.parser, k)
    stats = {"lines": 0}
    buffer: list[Any] = []
    try:
        with progress_bar() as bar:
            task = bar.add_task("scanning")
            seqs = sequences(paths, fmt, options.reader_config(kwargs), ckpt.parser, window_cfg,
                             labels, stats)
            for seq in seqs:
                buffer.append(seq)
                if len(buffer) >= SCAN_BUFFER:
                    report.add(scorer.score(buffer), sink)
                    buffer.clear()
                    bar.update(task, description=report.progress(stats["lines"]))
            report.add(scorer.score(buffer), sink)
            buffer.clear()
        if sink is not None:
            sink.commit()
    finally:
        if sink is not None:
            sink.discard()
    finish(report, stats["lines"], labels is not None, kwargs)


def finish(report: Report, lines: int, labelled: bool, kwargs: dict[str, Any]) -> None:
    """The summary, where the records went, and --fail-on-anomaly's exit status (both engines)."""
    report.print_summary(lines, labelled=labelled)
    flagged = report.anomalous_keys + report.anomalous_ends
    if kwargs["output"]:
        click.echo(f"Wrote {flagged:,} records to {kwargs['output']}", err=True)
    if kwargs["fail_on_anomaly"] and flagged:
        sys.exit(1)
