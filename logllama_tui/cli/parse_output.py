"""Sinks of `logllama parse`: the rich table and the per-line CSV (written atomically)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence

from logllama_tui.parser import LogParser


def print_table(parser: LogParser, ranked: Sequence[tuple[int, int]], lines: int, files: int) -> None:
    """Templates by count, most frequent first, then the totals."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Templates", show_lines=False)
    table.add_column("key", justify="right", style="cyan")
    table.add_column("count", justify="right")
    table.add_column("template", overflow="fold")
    for key, count in ranked:
        table.add_row(str(key), f"{count:,}", Text(parser.template(key)))
    console = Console()
    console.print(table)
    console.print(f"{lines:,} lines, {len(ranked):,} templates, {files} file{'s' if files != 1 else ''}",
                  markup=False, highlight=False)


def write_csv(path: str, parser: LogParser, keys: Sequence[int], linenos: Sequence[int],
              file_ix: Sequence[int], files: Sequence[str] | None) -> None:
    """LineId,Key,Template per line (File first when `files`); temp file, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    templates: dict[int, str] = {}
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            out = csv.writer(fh)
            out.writerow((["File"] if files else []) + ["LineId", "Key", "Template"])
            for i, key in enumerate(keys):
                template = templates.get(key)
                if template is None:
                    template = templates[key] = parser.template(key)
                row = [linenos[i], key, template]
                out.writerow([files[file_ix[i]], *row] if files else row)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
