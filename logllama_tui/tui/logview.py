"""A virtualized log list: renders only the visible rows; a ring of recent lines, anomalies kept
(up to a cap, the oldest dropped past it)."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .messages import CursorMoved

STYLE_UNSEEN = Style(color="white", bgcolor="#8b1a1a", bold=True)
STYLE_RANK = Style(color="black", bgcolor="#d7a000")
STYLE_MARK = Style(color="#5f87ff", bold=True)
STYLE_NORMAL = Style()
STYLE_DIM = Style(dim=True)
STYLE_CURSOR = Style(reverse=True)


def badge(v: Any) -> str:
    """The short verdict shown before a line."""
    if v.kind == "unseen":
        return " UNSEEN "
    if v.kind == "rank":
        return f" r{v.rank:<5} "
    return "        "


class LogView(ScrollView, can_focus=True):
    """Scored lines, newest at the bottom; a cursor selects one for the details pane."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First", show=False),
        Binding("end,G", "jump(-1)", "Last", show=False),
    ]

    cursor: reactive[int] = reactive(-1, always_update=True)
    follow: reactive[bool] = reactive(True)

    def __init__(self, ring_size: int = 10_000, max_anomalies: int = 100_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ring_size = ring_size
        self.max_anomalies = max_anomalies
        self.anomalies = 0
        self.dropped_anomalies = 0
        """Anomalies pruned past max_anomalies (the app says so once)."""
        self.entries: list[Any] = []
        self.rows: list[int] = []
        """Indices into entries shown under the current filter."""
        self.normals = 0
        self.anomalies_only = False
        self.search = ""
        self.marks: dict[int, str] = {}
        """id(verdict) -> "FP" or "OK" once a person marked it."""
        self._style: Style | None = None

    # -- data ---------------------------------------------------------------------------------
    def add(self, verdicts: list[Any]) -> None:
        """Append scored lines; prune old normal lines past the ring size."""
        base = len(self.entries)
        self.entries.extend(verdicts)
        normals = sum(1 for v in verdicts if not v.anomalous)
        self.normals += normals
        self.anomalies += len(verdicts) - normals
        if (self.normals > self.ring_size + max(100, self.ring_size // 4)
                or self.anomalies > self.max_anomalies + max(100, self.max_anomalies // 4)):
            self._prune()
        elif self._filtered:
            self.rows.extend(i for i in range(base, len(self.entries)) if self._shown(self.entries[i]))
        else:  # no filter: every entry is a row (no per-line call)
            self.rows.extend(range(base, len(self.entries)))
        self._resize()
        if self.follow and self.rows:
            self.cursor = len(self.rows) - 1
            self.scroll_end(animate=False, immediate=True)

    def _prune(self) -> None:
        selected = None if self.follow else self.selected  # following: the cursor goes to the end
        drop = max(0, self.normals - self.ring_size)
        drop_bad = max(0, self.anomalies - self.max_anomalies)
        kept: list[Any] = []
        for i, v in enumerate(self.entries):
            if drop <= 0 and drop_bad <= 0:  # the oldest are gone: keep the rest as is
                kept.extend(self.entries[i:])
                break
            if v.anomalous:
                if drop_bad > 0:
                    drop_bad -= 1
                    self.anomalies -= 1
                    self.dropped_anomalies += 1
                    self.marks.pop(id(v), None)
                    continue
            elif drop > 0:
                drop -= 1
                self.normals -= 1
                continue
            kept.append(v)
        self.entries = kept
        self.refilter(selected)

    @property
    def _filtered(self) -> bool:
        return self.anomalies_only or bool(self.search)

    def _shown(self, v: Any) -> bool:
        if self.anomalies_only and not v.anomalous:
            return False
        return not self.search or self.search in v.text.lower()

    def refilter(self, keep: Any | None = None) -> None:
        """Recompute the visible rows; keep the cursor on `keep` (or the nearest row)."""
        keep = self.selected if keep is None and not self.follow else keep
        if self._filtered:
            self.rows = [i for i, v in enumerate(self.entries) if self._shown(v)]
        else:
            self.rows = list(range(len(self.entries)))
        self._resize()
        if keep is not None:
            for row, i in enumerate(self.rows):
                if self.entries[i] is keep or (self.entries[i].lineno >= keep.lineno
                                               and self.entries[i].source == keep.source):
                    self.cursor = row
                    break
            else:
                self.cursor = len(self.rows) - 1
        else:
            self.cursor = len(self.rows) - 1
        self.refresh()

    def _resize(self) -> None:
        width = self.size.width or 80
        self.virtual_size = Size(width, len(self.rows))

    @property
    def selected(self) -> Any | None:
        if 0 <= self.cursor < len(self.rows):
            return self.entries[self.rows[self.cursor]]
        return None

    # -- cursor -------------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        if new >= 0:
            self.scroll_to_region_row(new)
        self.refresh()
        self.post_message(CursorMoved(self.selected))

    def scroll_to_region_row(self, row: int) -> None:
        top = self.scroll_offset.y
        height = self.scrollable_content_region.height or 1
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True)

    def move_to(self, row: int) -> None:
        if self.rows:
            self.cursor = max(0, min(row, len(self.rows) - 1))
            self.follow = self.cursor == len(self.rows) - 1 and self.follow

    def action_cursor(self, delta: int) -> None:
        self.follow = False
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.follow = False
        self.move_to(self.cursor + direction * max(1, self.scrollable_content_region.height - 1))

    def action_jump(self, where: int) -> None:
        self.follow = where == -1
        self.move_to(0 if where == 0 else len(self.rows) - 1)

    def find_anomaly(self, direction: int) -> bool:
        """Move the cursor to the next (1) or previous (-1) anomalous visible row."""
        row = self.cursor + direction
        while 0 <= row < len(self.rows):
            if self.entries[self.rows[row]].anomalous:
                self.follow = False
                self.cursor = row
                return True
            row += direction
        return False

    def on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y
        if 0 <= row < len(self.rows):
            self.follow = False
            self.cursor = row

    # -- rendering ----------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        self._style = self.rich_style  # once per frame, not per row (it walks the CSS)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = self.scroll_offset.y + y
        style = self._style if self._style is not None else self.rich_style
        if row >= len(self.rows):
            return Strip.blank(width, style)
        v = self.entries[self.rows[row]]
        kind_style = STYLE_UNSEEN if v.kind == "unseen" else STYLE_RANK if v.kind == "rank" else STYLE_DIM
        mark = self.marks.get(id(v), "  ")
        segs = [
            Segment(f"{v.lineno:>7} ", STYLE_DIM),
            Segment(badge(v), kind_style),
            Segment(f"{mark} ", STYLE_MARK),
            Segment(v.text.replace("\t", "    "), STYLE_NORMAL),
        ]
        strip = Strip(segs).crop_extend(self.scroll_offset.x, self.scroll_offset.x + width, style)
        if row == self.cursor:
            strip = strip.apply_style(STYLE_CURSOR if self.has_focus else Style(bgcolor="grey23"))
        return strip
