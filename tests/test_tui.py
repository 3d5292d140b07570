"""The tail app, driven headlessly: lines appended to a file light up, and every footer key works."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tail_model import cached_checkpoint, session

from logllama_tui.config import TailConfig
from logllama_tui.live import LineVerdict
from logllama_tui.live_engine import EngineSpec, open_engine
from logllama_tui.tui.app import TailApp, make_app
from logllama_tui.tui.details import render_details
from logllama_tui.tui.logview import LogView
from logllama_tui.tui.screens import HelpScreen

torch.set_num_threads(1)
FAST = TailConfig(poll_interval=0.05, batch_ms=20)


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return cached_checkpoint()


def text_of(renderable: Any, width: int = 140) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


def notices(app: TailApp) -> list[str]:
    return [n.message for n in app._notifications]


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


LINES = session("blk_1") + session("blk_2", (0, 2, 3)) + session("blk_3", (0, 1, "unseen", 3))
KINDS = [None] * 5 + ["rank", None] + [None, None, "unseen", "rank"]


async def test_appended_lines_light_up_and_every_key_works(ckpt: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("an old line that is not replayed\n")
    feedback = tmp_path / "fb.jsonl"
    app = make_app([str(log)], EngineSpec(model=str(ckpt)), FAST, feedback=str(feedback),
                   export_dir=str(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.engine is not None, 60)
        append(log, LINES)
        await until(pilot, lambda: app.lines == len(LINES))
        view = app.query_one(LogView)
        assert [v.kind for v in view.entries] == KINDS
        assert app.anomalies == 3
        assert view.follow and view.cursor == len(LINES) - 1  # following: on the newest line
        # N / n: previous / next anomaly, with the details pane showing why
        await pilot.press("N")
        assert view.selected.lineno == 10 and view.selected.kind == "unseen"
        await pilot.press("N")
        assert view.selected.lineno == 6 and not view.follow
        details = text_of(app.query_one("#details").content)
        assert "RANK 3 >= K=1" in details and "Received block <BLK> of size <NUM>" in details
        assert "100.0%" in details or "99." in details  # the expected key's probability
        await pilot.press("n")
        assert view.selected.lineno == 10
        # a: anomalies only, and back
        await pilot.press("a")
        assert [view.entries[i].lineno for i in view.rows] == [6, 10, 11]
        await pilot.press("a")
        assert len(view.rows) == len(LINES)
        # x / c: feedback appended
        await pilot.press("N")  # line 6
        await pilot.press("x")
        await pilot.press("n")  # line 10
        await pilot.press("c")
        marks = [json.loads(s) for s in feedback.read_text().splitlines()]
        assert [(m["line"], m["verdict"]) for m in marks] == [(6, "false_positive"), (10, "anomaly")]
        assert marks[0]["model"]["name"] == ckpt.name and marks[0]["file"] == str(log)
        # e: export
        await pilot.press("e")
        exported = list(tmp_path.glob("logllama-anomalies-*.jsonl"))
        assert len(exported) == 1
        rows = [json.loads(s) for s in exported[0].read_text().splitlines()]
        assert [r["line"] for r in rows] == [6, 10, 11] and rows[0]["candidates"]
        # /: search filters, Esc clears
        await pilot.press("slash")
        await pilot.press(*"blk_3", "enter")
        assert [view.entries[i].lineno for i in view.rows] == [8, 9, 10, 11]
        await pilot.press("escape")
        assert len(view.rows) == len(LINES)
        # f: follow on jumps to the newest line and keeps up with new ones
        await pilot.press("f")
        assert view.follow
        append(log, session("blk_4", (0,)))
        await until(pilot, lambda: app.lines == len(LINES) + 1)
        assert view.selected.text.endswith("dest: /10.0.0.2:50010")
        await pilot.press("f")
        assert not view.follow
        # ?: help screen, Esc closes
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # q: quit
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_screen_up_before_model_and_waiting_lines_scored_later(ckpt: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    go = threading.Event()

    def slow_load(notice: Callable[[str, str], None]) -> Any:
        go.wait(30)
        return open_engine(EngineSpec(model=str(ckpt)), notice)

    app = make_app([str(log)], None, FAST, load=slow_load)
    t0 = time.monotonic()
    async with app.run_test(size=(120, 30)) as pilot:
        assert time.monotonic() - t0 < 5  # the screen does not wait for the model
        await until(pilot, lambda: app.follower is not None)  # started after the first frame
        append(log, LINES)
        await until(pilot, lambda: app.worker is not None and app.worker.pending == len(LINES))
        await pilot.pause(1.1)  # a header tick
        assert "loading model" in str(app.query_one("#stats").content)
        assert app.lines == 0
        go.set()
        await until(pilot, lambda: app.lines == len(LINES))
        assert app.anomalies == 3


async def test_bad_input_is_a_notice_and_the_app_keeps_running(tmp_path: Path) -> None:
    missing = tmp_path / "later.log"
    app = make_app([str(missing)], EngineSpec(model=str(tmp_path / "no-such-model")), FAST)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: any("no model" in n for n in notices(app)), 30)
        assert any("does not exist yet" in n for n in notices(app))
        missing.write_text("now it exists\n")
        await until(pilot, lambda: any("following" in n for n in notices(app)))
        assert app.is_running
        assert "no model" in str(app.query_one("#stats").content)
        assert "No model: no model" in text_of(app.query_one("#details").content)  # stays visible


async def test_model_from_another_format_is_a_notice(ckpt: Path, tmp_path: Path) -> None:
    log = tmp_path / "sys.log"
    log.write_text("")
    app = make_app([str(log)], EngineSpec(model=str(ckpt), fmt="syslog"), FAST)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: any("trained on format hdfs" in n for n in notices(app)), 60)
        append(log, ["Nov 23 10:00:00 host sshd[1]: Accepted password for root"])
        await until(pilot, lambda: app.lines == 1)
        assert app.query_one(LogView).entries[0].kind == "unseen"


# -- snapshots: made-up verdicts, no threads, so every pixel is deterministic ---------------------
def fake_verdicts() -> list[LineVerdict]:
    t = ["Receiving block <BLK> src: /<IP> dest: /<IP>", "Received block <BLK> of size <NUM> from /<IP>",
         "PacketResponder <NUM> for block <BLK> terminating", "Verification succeeded for <BLK>"]
    out = []
    for i, line in enumerate(LINES):
        kind = KINDS[i]
        step = [0, 1, 2, 3, 0, 2, 3, 0, 1, -1, 3][i]
        template = t[step] if step >= 0 else "Exception in receiveBlock for block <BLK> java.io.IOException"
        cands = [(5, 0.9731, t[1]), (7, 0.0201, t[3]), (2, 0.0042, "</s>")] if kind else []
        out.append(LineVerdict("app.log", i + 1, line, 4 + step if step >= 0 else 3, template,
                               f"blk_{1 + (i >= 4) + (i >= 7)}", 3 if kind else 0, kind is not None,
                               kind, cands, [(i - 1, LINES[i - 1], 4, t[0])] if i else [], 1))
    return out


def snapshot_app() -> TailApp:
    app = make_app(["app.log"], None, FAST, start_threads=False)
    return app


async def _fill(pilot: Any) -> None:
    app = pilot.app
    app.tick_timer.pause()
    app.engine = SimpleNamespace(model_name="tiny-hdfs", device="cpu", info={"k": 1})
    app.add_verdicts(fake_verdicts())
    app.rates.extend([0.0, 0.05, 0.3, 0.1, 0.0, 0.0, 0.27, 0.02, 0.0, 0.0])
    app.query_one("Sparkline").data = list(app.rates)
    await pilot.pause()


def test_snapshot_main_screen(snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(), terminal_size=(120, 34), run_before=_fill)


def test_snapshot_details_of_a_rank_anomaly(snap_compare: Any) -> None:
    async def select(pilot: Any) -> None:
        await _fill(pilot)
        await pilot.press("N", "N")

    assert snap_compare(snapshot_app(), terminal_size=(120, 34), run_before=select)


def test_snapshot_anomalies_only_and_help(snap_compare: Any) -> None:
    async def show(pilot: Any) -> None:
        await _fill(pilot)
        await pilot.press("a", "question_mark")

    assert snap_compare(snapshot_app(), terminal_size=(120, 34), run_before=show)


def test_details_render_unseen_and_orphan() -> None:
    v = fake_verdicts()[9]
    text = text_of(render_details(v, "tiny"))
    assert "UNSEEN TEMPLATE" in text and "never seen in training by tiny" in text
    orphan = LineVerdict("f", 1, "x", 4, "x")
    assert "not in any sequence" in text_of(render_details(orphan))


async def test_ring_is_bounded_and_keeps_every_anomaly() -> None:
    app = make_app(["app.log"], None, TailConfig(ring_size=20), start_threads=False)
    async with app.run_test(size=(100, 30)) as pilot:
        base = fake_verdicts()
        for round_ in range(40):  # 440 lines, 120 anomalies
            batch = [LineVerdict(v.source, round_ * 11 + v.lineno, v.text, v.key, v.template, v.sid,
                                 v.rank, v.anomalous, v.kind, v.candidates, v.context, v.k)
                     for v in base]
            app.add_verdicts(batch)
        await pilot.pause()
        view = app.query_one(LogView)
        normals = [v for v in view.entries if not v.anomalous]
        assert len([v for v in view.entries if v.anomalous]) == 120  # every anomaly kept
        assert 20 <= len(normals) <= 20 + 100  # the ring, plus the slack pruned in one go
        assert normals[-1].lineno == 438  # the newest normal lines are the ones kept (439, 440 are anomalies)
        assert view.selected is view.entries[-1]  # still following


async def test_anomalies_past_the_cap_leave_the_view_oldest_first_with_a_notice() -> None:
    """A model for another format flags every line: memory stays bounded all the same."""
    app = make_app(["app.log"], None, TailConfig(ring_size=20, max_anomalies=150), start_threads=False)
    async with app.run_test(size=(100, 30)) as pilot:
        base = fake_verdicts()
        for round_ in range(100):  # 1,100 lines, 300 anomalies
            app.add_verdicts([LineVerdict(v.source, round_ * 11 + v.lineno, v.text, v.key, v.template,
                                          v.sid, v.rank, v.anomalous, v.kind, v.candidates, v.context,
                                          v.k) for v in base])
        await pilot.pause()
        view = app.query_one(LogView)
        kept = [v.lineno for v in view.entries if v.anomalous]
        assert 150 <= len(kept) <= 150 + 100 and view.dropped_anomalies == 300 - len(kept)
        assert kept == sorted(kept) and kept[-1] == 1100  # the newest kept, in order
        assert app.anomalies == 300  # the header still counts every one
        assert any("anomalies: the oldest leave the view" in n.message for n in app._notifications)


# -- the benchmark trace (tui/trace.py) ------------------------------------------------------------
async def test_trace_writes_one_record_per_drawn_batch(tmp_path: Path, monkeypatch: Any) -> None:
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("LOGLLAMA_TRACE", str(trace))
    app = snapshot_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        lines = fake_verdicts()
        lines[6].lineno = 40  # a gap: a new run
        app.add_verdicts(lines[:4])
        app.add_verdicts(lines[4:])
        await until(pilot, lambda: app.trace is not None and not app.trace.pending)
        assert app.query_one("#stats").lines_drawn == len(lines)  # the frame that counted them
    records = [json.loads(s) for s in trace.read_text().splitlines()]
    assert records[0]["ev"] == "screen"
    shown = [r for r in records if r["ev"] == "shown"]
    assert [(r["n"], r["total"], r["lines"]) for r in shown] == [
        (4, 4, [["app.log", 1, 4]]),
        (7, 11, [["app.log", 5, 6], ["app.log", 40, 40], ["app.log", 8, 11]])]
    assert all(r["t"] >= records[0]["t"] for r in shown)


def test_no_trace_unless_asked(monkeypatch: Any) -> None:
    monkeypatch.delenv("LOGLLAMA_TRACE", raising=False)
    assert snapshot_app().trace is None


async def test_busy_view_takes_batches_that_land_within_a_frame_together() -> None:
    from logllama_tui.tui.messages import VerdictBatch

    app = snapshot_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.tick_timer.pause()
        sizes: list[int] = []
        add = app.add_verdicts
        app.add_verdicts = lambda vs: (sizes.append(len(vs)), add(vs))  # type: ignore[method-assign]
        app._lps = 5_000.0  # busy: at most one refresh per FRAME_S
        lines = fake_verdicts()
        for part in (lines[:2], lines[2:5], lines[5:]):
            app.post_message(VerdictBatch(part))
        await until(pilot, lambda: app.lines == len(lines))
        assert sizes == [2, 9]  # the first at once, the two that followed in one frame
        assert [v.lineno for v in app.query_one(LogView).entries] == list(range(1, 12))
