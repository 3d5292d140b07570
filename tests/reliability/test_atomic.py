"""Atomic state: kill -9 in the middle of a save leaves the previous state loadable.

A forked child saves in a tight loop (checkpoint, parser state, feedback appends), each save a
new generation; the parent SIGKILLs it after a random delay, so kills land at random points of a
save (temp writes, fsyncs, the renames, the clean-up), then loads what is on disk. Every load must
succeed, the generation must never go back, and the child must have made progress.

Default: 10 kills per kind of state (60 with LOGLLAMA_FULL_RELIABILITY=1).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rel_helpers import FULL

from logllama_tui.checkpoint import load_checkpoint, save_checkpoint
from logllama_tui.errors import BadInput
from logllama_tui.feedback import FeedbackRecord, append_feedback, read_feedback
from logllama_tui.parser import LogParser
from logllama_tui.records import Record

KILLS = 60 if FULL else 10


def kill_during(loop: Callable[[], None], delay: tuple[float, float], rng: random.Random) -> None:
    """Fork a child running `loop` forever; SIGKILL it after a random delay."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            loop()
        finally:
            os._exit(0)
    time.sleep(rng.uniform(*delay))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_checkpoint_survives_kill_during_save(tiny_ckpt: Path, tmp_path: Path) -> None:
    base = load_checkpoint(tiny_ckpt)
    out = tmp_path / "ckpt"
    save_checkpoint(out, base.model, base.parser, {**base.meta, "generation": 0})
    rng = random.Random(8)
    last = 0

    def loop() -> None:
        gen = last
        while True:
            gen += 1
            with torch.no_grad():  # different weights each generation
                for p in base.model.parameters():
                    p.add_(0.01)
            save_checkpoint(out, base.model, base.parser, {**base.meta, "generation": gen})

    for _ in range(KILLS):
        kill_during(loop, (0.05, 0.6), rng)
        ckpt = load_checkpoint(out)  # must not raise
        gen = ckpt.meta["generation"]
        assert gen >= last, (gen, last)
        last = gen
    assert last > KILLS  # the child saved many times: the kills hit a busy save loop
    leftovers = {p.name for p in tmp_path.iterdir()} - {"ckpt"}
    assert leftovers <= {".ckpt.tmp", ".ckpt.old"}, leftovers
    save_checkpoint(out, base.model, base.parser, {**base.meta, "generation": -1})
    assert load_checkpoint(out).meta["generation"] == -1  # a later save cleans up and works


def test_parser_state_survives_kill_during_save(tmp_path: Path) -> None:
    path = tmp_path / "parser.json"
    parser = LogParser()
    parser.learn(Record("x", 1, "boot 0", "boot 0"))
    parser.save(path)
    rng = random.Random(9)
    sizes = [len(LogParser.load(path).vocab)]

    def loop() -> None:
        p = LogParser.load(path)  # go on from what is on disk: each save grows the vocabulary
        i = len(p.vocab)
        while True:
            i += 1
            words = " ".join(f"w{i}x{j}" for j in range(i % 7 + 1))
            p.learn(Record("x", i, f"event{i} {words}", f"event{i} {words}"))
            p.save(path)

    for _ in range(KILLS):
        kill_during(loop, (0.05, 0.4), rng)
        loaded = LogParser.load(path)  # must not raise
        sizes.append(len(loaded.vocab))
    assert sizes == sorted(sizes)  # never an older state
    assert sizes[-1] > sizes[0] + KILLS  # progress: the child kept learning and saving
    assert not [p for p in tmp_path.iterdir() if p.name != "parser.json"
                and not p.name.startswith(".parser.json.")]


def feedback(i: int) -> FeedbackRecord:
    return FeedbackRecord(file="app.log", line=i, text="x" * (i % 5000), key=4, template="x",
                          verdict="anomaly", model_name="tiny", model_fingerprint="sha256:0")


def test_feedback_survives_kill_during_append(tmp_path: Path) -> None:
    path = tmp_path / "fb.jsonl"
    rng = random.Random(10)
    seen = 0

    def loop() -> None:
        i = seen
        while True:
            i += 1
            append_feedback(path, feedback(i))

    for _ in range(KILLS):
        kill_during(loop, (0.05, 0.3), rng)
        records = read_feedback(path)  # every record whole: no torn line after kill -9
        assert [r.line for r in records] == list(range(1, len(records) + 1))
        assert len(records) >= seen
        seen = len(records)
    assert seen > KILLS


def test_torn_feedback_line_is_reported_not_guessed(tmp_path: Path) -> None:
    """What a power cut could leave (kill -9 cannot): a half line, named by its line number."""
    path = tmp_path / "fb.jsonl"
    append_feedback(path, feedback(1))
    whole = json.dumps(feedback(2).to_json())
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(whole[: len(whole) // 2])
    with pytest.raises(BadInput, match=r"fb\.jsonl:2: "):
        read_feedback(path)
