"""Render docs/screenshot.svg: the TUI on the HDFS sample with the shipped model, an anomaly selected.

    .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from logllama_tui.config import TailConfig
from logllama_tui.live_engine import EngineSpec
from logllama_tui.tui.app import make_app

REPO = Path(__file__).resolve().parent.parent
LINES = 700  # the first anomalies of the sample land within these


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="logllama-shot-"))
    log = tmp / "hdfs.log"
    log.write_bytes(b"".join((REPO / "sample_logs" / "hdfs_sample.log").read_bytes()
                             .splitlines(keepends=True)[:LINES]))
    app = make_app([str(log)], EngineSpec(model=str(REPO / "models" / "hdfs")),
                   TailConfig(from_start=True, poll_interval=0.05))
    try:
        async with app.run_test(size=(150, 42)) as pilot:
            for _ in range(600):
                await pilot.pause(0.1)
                if app.lines >= LINES and app.anomalies:
                    break
            await pilot.press("g")
            await pilot.press("n", "n")
            await pilot.pause(0.5)
            app.save_screenshot(str(REPO / "docs" / "screenshot.svg"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
