"""The details pane: why the selected line was (or was not) flagged."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static


def render_details(v: Any | None, model: str = "", error: str | None = None) -> Any:
    """A rich renderable for verdict `v` (a LineVerdict); `error`: why no model is loaded."""
    if v is None:
        if error:
            return Text.assemble(("No model: ", "bold red"), error,
                                 ("\nLines are followed but not scored. Quit (q) and fix --model.", "dim"))
        return Text("No line selected. Lines appear here as they are written to the followed files.",
                    style="dim")
    head = Text()
    head.append(f"{v.source}:{v.lineno}  ", style="bold")
    if v.kind == "unseen":
        head.append(" UNSEEN TEMPLATE ", style="bold white on #8b1a1a")
        head.append(f"  never seen in training{f' by {model}' if model else ''}")
    elif v.kind == "rank":
        head.append(f" RANK {v.rank} >= K={v.k} ", style="black on #d7a000")
        head.append("  the model did not expect this key here")
    elif v.rank is not None:
        head.append(f" normal: rank {v.rank} < K={v.k} ", style="green")
    else:
        head.append(" not in any sequence (no session id) ", style="dim")
    head.append(f"\nsequence {v.sid or '-'}   key {v.key}: ", style="dim")
    head.append(v.template, style="italic")
    parts: list[Any] = [head]
    ctx = Table.grid(padding=(0, 1))
    ctx.add_column(justify="right", style="dim")
    ctx.add_column(justify="right", style="cyan")
    ctx.add_column()
    for lineno, _text, key, template in v.context:
        ctx.add_row(str(lineno), str(key), template)
    ctx.add_row(str(v.lineno), str(v.key), Text(v.template, style="bold"))
    parts.append(Text("Sequence so far (line, key, template):", style="bold underline"))
    parts.append(ctx)
    if v.candidates:
        cand = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold underline")
        cand.add_column("expected", justify="right")
        cand.add_column("prob", justify="right")
        cand.add_column("template")
        for key, prob, template in v.candidates:
            cand.add_row(str(key), f"{prob:.1%}", template)
        parts.append(cand)
    return Group(*parts)


class Details(Static):
    """Shows `render_details` of the selected line."""

    def show(self, v: Any | None, model: str = "", error: str | None = None) -> None:
        self.update(render_details(v, model, error))
