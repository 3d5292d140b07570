"""`logllama eval`: the paper's protocol, precision/recall/F1 on sequences the model never trained on."""

from __future__ import annotations

import json
from typing import Any

import click

from logllama_tui.cli import options
from logllama_tui.config import DetectConfig

# torch, transformers and the pipeline are imported inside the functions: `--help` stays fast.

EVAL_BUFFER = 1024
"""Finished sequences scored together."""


def used_sids(meta: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(every sid the checkpoint trained, validated or RL-finetuned on, its validation sids)."""
    used: set[str] = set()
    val: set[str] = set()
    places = [meta, meta.get("split"), meta.get("rl"), meta.get("finetune")]
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in ("train_sids", "val_sids", "rl_sids"):
            sids = place.get(key)
            if isinstance(sids, list):
                used.update(str(s) for s in sids)
                if key == "val_sids" and place is not meta.get("rl"):
                    val.update(str(s) for s in sids)
    return used, val


def gather(ckpt: Any, paths: list[str], fmt: str, reader_cfg: Any, window_cfg: Any,
           labels: dict[str, bool] | None, exclude: set[str], val: set[str], want_val: bool,
           batch_size: int, device: Any) -> dict[str, Any]:
    """Stream the data once: worst ranks of the labelled test sequences (and of validation ones)."""
    from logllama_tui.cli.scan import progress_bar, sequences
    from logllama_tui.scoring import Scorer

    n_keys = ckpt.parser.vocab.n_keys
    # K = every candidate: we only want ranks here; the verdicts for any K follow from them.
    scorer = Scorer(ckpt.model, n_keys, n_keys + 1, device=device, batch_size=batch_size,
                    n_candidates=0)
    test: list[tuple[int, int, bool]] = []  # (worst key rank, end rank, label)
    val_worst: list[tuple[int, int]] = []
    counts = {"lines": 0, "excluded": 0, "unlabelled": 0, "labelled_total": 0}
    buffer: list[Any] = []
    val_buffer: list[Any] = []

    def drain() -> None:
        if buffer:
            ranks = scorer.worst_ranks(buffer)
            test.extend((a, b, bool(s.label)) for (a, b), s in zip(ranks, buffer, strict=True))
            buffer.clear()
        if val_buffer:
            val_worst.extend(scorer.worst_ranks(val_buffer))
            val_buffer.clear()

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating {ckpt.path.name}")
        for seq in sequences(paths, fmt, reader_cfg, ckpt.parser, window_cfg, labels, counts):
            if seq.label is not None:
                counts["labelled_total"] += 1
            if seq.sid in exclude:
                counts["excluded"] += 1
                if want_val and seq.sid in val and seq.label is not True:
                    val_buffer.append(seq)
            elif seq.label is None:
                counts["unlabelled"] += 1
            else:
                buffer.append(seq)
            if len(buffer) + len(val_buffer) >= EVAL_BUFFER:
                drain()
                bar.update(task, description=f"evaluating {ckpt.path.name}: "
                           f"{counts['lines']:,} lines, {len(test):,} test sequences")
        drain()
    return {"test": test, "val": val_worst, **counts, "mode": counts.get("mode")}


def pick_k(spec: str | None, ckpt: Any, val_worst: list[tuple[int, int]], target_fpr: float,
           ignore_end: bool) -> tuple[int, str]:
    """K: --k auto calibrates on the validation sequences in the data; else as `scan` does."""
    from logllama_tui.cli.scan import choose_k
    from logllama_tui.scoring import k_for_fpr

    n_keys = ckpt.parser.vocab.n_keys
    if spec is not None and spec.strip().lower() == "auto" and val_worst:
        worst = [a if ignore_end else max(a, b) for a, b in val_worst]
        k = k_for_fpr(worst, n_keys, target_fpr)
        return k, f"auto: {target_fpr:g} FPR on {len(worst)} validation sequences"
    return choose_k(spec, n_keys, ckpt.meta)


def metrics(data: dict[str, Any], k: int, ignore_end: bool) -> dict[str, Any]:
    """The --json figures for verdicts at K."""
    from logllama_tui.metrics import Confusion

    c = Confusion()
    for keys, end, label in data["test"]:
        c.add((keys if ignore_end else max(keys, end)) >= k, label)
    return {**c.as_dict(), "sequences": c.total, "excluded_training": data["excluded"]}


def check_labels(data: dict[str, Any], labels_given: bool) -> None:
    """BadInput when there is nothing labelled to evaluate on."""
    from logllama_tui.errors import BadInput

    if data["labelled_total"] == 0:
        if labels_given:
            raise BadInput("no sequence matched a label in --labels: check that its ids are the "
                           "data's session ids (e.g. blk_123) and the window settings")
        raise BadInput("eval needs labels: pass --labels BlockId,Label.csv (session labels) or data "
                       "with inline labels (bgl, thunderbird, structured CSV with a label column)")
    if not data["test"]:
        raise BadInput(f"all {data['labelled_total']} labelled sequences were used for training or "
                       "validation; evaluate on other data or train with a smaller --train-fraction")


def print_table(rows: list[dict[str, Any]]) -> None:
    """The human-readable result, one column per model."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    for row in rows:
        table.add_column(row["name"].rstrip("/").rsplit("/", 1)[-1], justify="right")
    for key, label in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("tp", "TP"),
                       ("fp", "FP"), ("fn", "FN"), ("tn", "TN"), ("k", "K"),
                       ("sequences", "Test sequences"), ("excluded_training", "Excluded (trained on)")):
        cells = [f"{r[key]:.4f}" if isinstance(r[key], float) else f"{r[key]:,}" for r in rows]
        table.add_row(label, *cells)
    Console().print(table)


@click.command("eval")
@click.argument("data_paths", metavar="DATA...", nargs=-1, required=True)
@options.model_option()
@click.option("--compare", nargs=2, default=None, metavar="M1 M2",
              help="Evaluate two models side by side on the same test sequences.")
@options.input_options()
@options.window_options()
@options.labels_option()
@options.k_option()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--ignore-end", is_flag=True,
              help="Leave the end-of-sequence position unscored (measures what the end key buys).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DetectConfig().batch_size,
              show_default=True, help="Sequences per forward pass.")
@options.device_option()
@click.pass_context
def command(ctx: click.Context, data_paths: tuple[str, ...], **kwargs: Any) -> None:
    """Precision, recall and F1 of a model on labelled data it did not train on (the paper's protocol).

    Sequences the checkpoint trained or validated on (and a finetune's RL sequences) are excluded
    and counted; a sequence is anomalous when any of its keys (or its end) ranks >= K.

    \b
    Examples:
      logllama eval HDFS.log --labels anomaly_label.csv --model hdfs
      logllama eval BGL.log --model bgl --k auto --json
      logllama eval --compare hdfs hdfs-rl HDFS.log --labels anomaly_label.csv
    """
    from logllama_tui.cli.scan import data_settings, load_labels, open_model
    from logllama_tui.errors import BadInput

    paths = list(data_paths)
    names = list(kwargs["compare"] or [])
    if kwargs["model"] and names:
        raise BadInput("give either --model M or --compare M1 M2, not both")
    if not names:
        if not kwargs["model"]:
            raise BadInput("eval needs --model NAME_OR_DIR (or --compare M1 M2); see `logllama models`")
        names = [kwargs["model"]]
    ckpts = [open_model(n, paths, kwargs["fmt"], kwargs["max_line_bytes"], kwargs["device"])
             for n in names]
    exclude: set[str] = set()
    for c in ckpts:
        exclude |= used_sids(c.meta)[0]
    labels = load_labels(kwargs["labels"])
    want_val = (kwargs["k"] or "").strip().lower() == "auto"
    rows: list[dict[str, Any]] = []
    for name, ckpt in zip(names, ckpts, strict=True):
        fmt, window_cfg = data_settings(ctx, kwargs, ckpt.meta)
        device = next(ckpt.model.parameters()).device
        used, val = used_sids(ckpt.meta)
        data = gather(ckpt, paths, fmt, options.reader_config(kwargs), window_cfg, labels, exclude,
                      val, want_val, kwargs["batch_size"], device)
        check_labels(data, labels is not None)
        k, how = pick_k(kwargs["k"], ckpt, data["val"], kwargs["target_fpr"], kwargs["ignore_end"])
        click.echo(f"{name}: K = {k} of {ckpt.parser.vocab.n_keys + 1} candidates ({how}); "
                   f"excluded {data['excluded']:,} sequences used in training/validation/RL; "
                   f"{data['unlabelled']:,} unlabelled skipped", err=True)
        if data["excluded"] == 0 and used:
            click.echo(f"Warning: none of the {len(used):,} sequences {name} "
                       "trained, validated or was finetuned on is in this data. Fine for new data; "
                       "if this is its training data under another spelling of the path (window "
                       "ids hold the path as given), trained-on sequences are being tested: give "
                       "the paths as `train` was given them", err=True)
        rows.append({"name": name, "k": k, **metrics(data, k, kwargs["ignore_end"])})
    if len({r["sequences"] for r in rows}) > 1:
        click.echo("Warning: the models cut the data into different test sequences (different "
                   "window settings); the figures are not strictly comparable", err=True)
    if kwargs["as_json"]:
        if kwargs["compare"]:
            click.echo(json.dumps({"models": rows}))
        else:
            row = {key: v for key, v in rows[0].items() if key not in ("name", "k")}
            click.echo(json.dumps(row))
    else:
        print_table(rows)
