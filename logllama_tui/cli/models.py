"""`logllama models`: list, show and remove the named checkpoints."""

from __future__ import annotations

import json
import sys

import click

# checkpoint.py (and its platformdirs, safetensors, torch imports) load inside the commands.


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group("models", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List the trained models (name, architecture, keys, size, data, metrics).

    Models live under the user data directory (LOGLLAMA_HOME overrides it); every command that
    takes --model accepts one of these names or a checkpoint directory.

    \b
    Examples:
      logllama models
      logllama models show hdfs
      logllama models rm hdfs
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from logllama_tui.checkpoint import list_models, models_dir

    infos = list_models()
    if not infos:
        click.echo(f"No models in {models_dir()}; train one with `logllama train FILE --out NAME`.")
        return
    table = Table(title=f"Models in {models_dir()}")
    table.add_column("name", no_wrap=True)
    table.add_column("arch")
    for col in ("keys", "size", "val loss", "K"):
        table.add_column(col, justify="right")
    table.add_column("trained on", overflow="fold")
    table.add_column("created")
    for info in infos:
        if info.error:
            table.add_row(info.name, "[red]broken[/red]", "", _size(info.size), "", "",
                          info.error.split(":", 1)[-1].strip()[:60], "")
            continue
        files = ", ".join(p.rsplit("/", 1)[-1] for p in info.trained_on[:2])
        files += f" +{len(info.trained_on) - 2}" if len(info.trained_on) > 2 else ""
        val = info.metrics.get("best_val_loss")
        name = info.name if info.complete else f"{info.name} [yellow](unfinished)[/yellow]"
        table.add_row(name, info.arch, str(info.keys), _size(info.size),
                      "" if val is None else f"{val:.4f}", str(info.k or ""), files, info.created[:10])
    Console(width=None if sys.stdout.isatty() else 140).print(table)  # pipes: no squeezing


@command.command("show")
@click.argument("name")
@click.option("--sids", is_flag=True, help="Include the ids of the training/validation sequences.")
def show(name: str, sids: bool) -> None:
    """Print a model's metadata (settings, data, split, metrics) as JSON.

    NAME is a model name or a checkpoint directory. Example: logllama models show hdfs
    """
    from logllama_tui.checkpoint import read_meta, resolve_model

    path = resolve_model(name)
    meta = read_meta(path)
    split = meta.get("split")
    if isinstance(split, dict) and not sids:
        meta["split"] = {k: (f"{len(v)} ids (--sids lists them)" if k.endswith("_sids") and isinstance(v, list) else v)
                         for k, v in split.items()}
    click.echo(json.dumps({"path": str(path), **meta}, indent=2))


@command.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Delete the named model from the models directory.

    Only names under the models directory are removed, never arbitrary paths.
    Example: logllama models rm hdfs
    """
    from logllama_tui.checkpoint import remove_model

    path = remove_model(name)
    click.echo(f"Removed {path}")
