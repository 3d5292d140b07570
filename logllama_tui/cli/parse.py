"""`logllama parse`: turn log files into templates and log keys, and show what was found."""

from __future__ import annotations

from typing import Any

import click

from logllama_tui.cli import options

# The reader, formats, parser and rich are imported inside the function: `--help` stays fast.


@click.command("parse")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@options.input_options()
@click.option("--preset", default="auto", show_default=True, metavar="NAME",
              help="Drain settings of a loghub system (e.g. Linux), none, or auto: the system's "
              "preset when --format is loghub:<System> and no Drain option is given.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON document {"lines": N, "templates": [{"key", "template", "count"}]}.')
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, metavar="OUT.csv",
              help="Write LineId,Key,Template for every input line (a File column first when "
              "several files are given).")
@click.pass_context
def command(ctx: click.Context, files: tuple[str, ...], preset: str, as_json: bool,
            output: str | None, **kwargs: Any) -> None:
    """Find the templates (log keys) of log files with Drain and count them.

    \b
    Examples:
      logllama parse sample_logs/hdfs_sample.log
      logllama parse /var/log/syslog --json
      logllama parse Linux_2k.log --format loghub:Linux --output keys.csv
    """
    import json
    import os
    from array import array
    from collections import Counter

    from logllama_tui.cli.parse_output import print_table, write_csv
    from logllama_tui.errors import BadInput
    from logllama_tui.parser import LogParser
    from logllama_tui.pipeline import iter_files
    from logllama_tui.presets import preset_config

    if output is not None:
        parent = os.path.dirname(os.path.abspath(output))
        if os.path.isdir(output):
            raise BadInput(f"--output {output} is a directory; give a file name such as keys.csv")
        if not os.path.isdir(parent):
            raise BadInput(f"--output directory {parent} does not exist; create it first")

    fmt = kwargs["fmt"]
    drain_given = any(_explicit(ctx, n) for n in ("sim_th", "depth", "max_children", "no_masks"))
    cfg = options.parser_config(kwargs)
    system = _preset_system(preset, fmt, drain_given)
    if system is not None:
        cfg = preset_config(system, cfg)
        click.echo(f"parser: preset {system}", err=True)

    parser = LogParser(cfg)
    counts: Counter[int] = Counter()
    keys, linenos, file_ix = array("q"), array("q"), array("l")
    names: list[str] = []
    empty: list[str] = []
    for path, log_format, records in iter_files(list(files), fmt, options.reader_config(kwargs)):
        click.echo(f"format: {log_format.name}" + (f" ({path})" if len(files) > 1 or path != files[0]
                                                    else ""), err=True)
        names.append(path)
        before = len(keys)
        ix = len(names) - 1
        for record in records:
            key = parser.learn(record).key
            counts[key] += 1
            keys.append(key)
            linenos.append(record.lineno)
            file_ix.append(ix)
        if len(keys) == before:
            empty.append(path)
    if not keys:
        what = empty[0] if len(empty) == 1 else "every input file"
        raise BadInput(f"{what} is empty: no log lines to parse; check the path")
    for path in empty:
        click.echo(f"warning: {path} is empty", err=True)

    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if output is not None:
        write_csv(output, parser, keys, linenos, file_ix, names if len(names) > 1 else None)
    if as_json:
        doc = {"lines": len(keys), "templates": [
            {"key": k, "template": parser.template(k), "count": c} for k, c in ranked]}
        click.echo(json.dumps(doc, ensure_ascii=False))
    else:
        print_table(parser, ranked, len(keys), len(names))
    if output is not None:
        click.echo(f"wrote {len(keys)} rows to {output}", err=True)


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _preset_system(preset: str, fmt: str, drain_given: bool) -> str | None:
    """The loghub system whose preset applies, or None."""
    from logllama_tui.errors import BadInput
    from logllama_tui.presets import LOGHUB_PRESETS

    choice = preset.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "auto":
        low = fmt.strip().lower()
        if drain_given or not low.startswith("loghub:"):
            return None
        choice = fmt.strip()[len("loghub:"):]
    if choice.lower().startswith("loghub:"):
        choice = choice[len("loghub:"):]
    match = {s.lower(): s for s in LOGHUB_PRESETS}.get(choice.lower())
    if match is None:
        raise BadInput(f"unknown --preset {preset!r}; use auto, none or one of {', '.join(LOGHUB_PRESETS)}")
    return match
