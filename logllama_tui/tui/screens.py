"""The help screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """[b]logllama tail[/b]: each line is ranked among the model's predicted next keys as it lands.

[b on #8b1a1a] UNSEEN [/] the line's template never occurred in training (always anomalous)
[black on #d7a000] r12    [/] the true key ranked 12th: at or past K, so flagged

[b]Keys[/b]
  n / N        next / previous anomaly
  up/down, j/k move;  g/G first/last;  PgUp/PgDn
  f            follow new lines on/off
  a            show anomalies only (again: all lines)
  /            search (Enter to apply, Esc clears)
  x            mark the selected line as a false positive
  c            mark the selected line as a confirmed anomaly
               (x and c append to the feedback JSONL for `logllama finetune`)
  e            export every anomaly so far to a JSONL file
  ctrl+p       command palette
  ?            this help;  q  quit

Press Esc or ? to close."""


class HelpScreen(ModalScreen[None]):
    """Every key and what it does."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP, id="help-text")
