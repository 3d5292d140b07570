"""live.py's per-line ranks equal whole-sequence scoring; `logllama tail --plain` end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tail_model import cached_checkpoint, hdfs_line, session

from logllama_tui.config import WindowConfig
from logllama_tui.records import Line

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt() -> Path:
    return cached_checkpoint()


def interleaved() -> list[str]:
    """Three sessions interleaved, one skipping a step, one with an unseen template."""
    a = session("blk_1")
    b = session("blk_2", (0, 2, 3))
    c = session("blk_3", (0, 1, "unseen", 3))
    out: list[str] = []
    for i in range(4):
        for s in (a, b, c):
            if i < len(s):
                out.append(s[i])
    out += session("blk_4", (0, 1, 1, 2, 3)) + ["no session id here at all"]
    return out


def live_vs_whole(ckpt: Path, window: WindowConfig, mode: str, batches: list[int],
                  prefix_nodes: int | None = None, texts: list[str] | None = None,
                  live_out: list | None = None, **scorer_kw: int) -> int:
    """Score lines in batches of the given sizes live, and as finished sequences; compare."""
    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.formats import get_format
    from logllama_tui.live import LiveScorer
    from logllama_tui.pipeline import make_pipeline
    from logllama_tui.scoring import Scorer

    c = load_checkpoint(ckpt, "cpu")
    n_keys = c.parser.vocab.n_keys
    texts = interleaved() if texts is None else texts
    lines = [Line("f.log", i + 1, t) for i, t in enumerate(texts)]
    records = list(get_format("hdfs").records(lines))
    window = dataclasses.replace(window, mode=mode)
    live = LiveScorer(c.parser, Scorer(c.model, n_keys, 1, **scorer_kw), window, "session")
    if prefix_nodes is not None:  # a trie that starts afresh every few nodes
        from logllama_tui.live_prefix import PrefixVerdicts

        live.prefixes = PrefixVerdicts(prefix_nodes)
    if live_out is not None:
        live_out.append(live)
    verdicts = []
    pos = 0
    for size in batches:
        verdicts += live.process(records[pos: pos + size], wall=0.0)
        pos += size
    verdicts += live.process(records[pos:], wall=0.0) if pos < len(records) else []
    assert [v.lineno for v in verdicts] == list(range(1, len(lines) + 1))
    pipe = make_pipeline(c.parser, window, mode)
    seqs = [s for r in records for s in pipe.feed(r)] + pipe.flush()
    whole = {s.sid: sc for s, sc in zip(seqs, Scorer(c.model, n_keys, 1, **scorer_kw).score(seqs),
                                        strict=True)}
    compared = 0
    for v in verdicts:
        if v.sid is None:
            continue
        sc = whole[v.sid]
        idx = next(i for i, r in enumerate(sc.seq.records) if r.lineno == v.lineno)
        kv = sc.verdicts[idx]
        assert (v.rank, v.anomalous, v.kind) == (kv.rank, kv.anomalous, kv.kind), v.lineno
        # candidates agree up to float noise (padding changes the last bits; near-ties may swap)
        assert [k for k, p, _ in v.candidates if p > 0.01] == [k for k, p in kv.candidates if p > 0.01]
        whole_p = dict(kv.candidates)
        assert all(abs(p - whole_p.get(k, 0.0)) < 1e-4 for k, p, _ in v.candidates), (v.candidates, kv.candidates)
        compared += 1
    return compared


@pytest.mark.parametrize("batches", [[1] * 30, [5, 3, 7], [100]])
def test_live_ranks_equal_whole_session_scoring(ckpt: Path, batches: list[int]) -> None:
    assert live_vs_whole(ckpt, WindowConfig(), "session", batches) == len(interleaved()) - 1


def test_live_ranks_equal_whole_scoring_when_the_prefix_trie_restarts(ckpt: Path) -> None:
    assert live_vs_whole(ckpt, WindowConfig(), "session", [2, 3, 1, 4], prefix_nodes=2) \
        == len(interleaved()) - 1


def test_live_ranks_equal_whole_scoring_when_long_sequences_leave_the_trie(
        ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logllama_tui.live as live

    monkeypatch.setattr(live, "TRIE_KEYS", 2)  # past 2 keys a sequence goes on in its stream state
    assert live_vs_whole(ckpt, WindowConfig(), "session", [1, 2, 3, 100]) == len(interleaved()) - 1
    cfg = WindowConfig(window_size=5, step=2)
    assert live_vs_whole(ckpt, cfg, "count", [3, 4, 100]) == len(interleaved())


def test_a_repeated_session_is_answered_without_the_model(ckpt: Path) -> None:
    from logllama_tui.live_engine import EngineSpec, open_engine

    engine = open_engine(EngineSpec(model=str(ckpt)), lambda level, msg: None)
    steps = (0, 1, "unseen", 3)
    texts = session("blk_5", steps) + session("blk_6", steps)
    records = list(engine.fmt.records([Line("f", i + 1, t) for i, t in enumerate(texts)]))
    live = engine.live
    first = live.process(records[:4])
    ran = live._stream().forward_keys + live._trie.forward_keys
    assert ran == 5  # BOS and the four keys, once each
    second = live.process(records[4:])
    assert live._stream().forward_keys + live._trie.forward_keys == ran
    assert live.prefixes.hits == 4  # the verdict cache answered every line
    assert [(v.rank, v.kind, v.candidates) for v in second] == [(v.rank, v.kind, v.candidates) for v in first]
    assert [v.sid for v in second] == ["blk_6"] * 4 and [c[0] for c in second[3].context] == [5, 6, 7]


def test_live_follows_the_scorers_slices(ckpt: Path) -> None:
    # slices of 3 keys repeating 1: every session crosses slices, in the trie, the streams and Scorer
    assert live_vs_whole(ckpt, WindowConfig(), "session", [1, 2, 3, 100], slice_keys=3, overlap=1) \
        == len(interleaved()) - 1


def test_a_burst_repeats_its_slices_and_they_are_answered_from_the_cache(ckpt: Path) -> None:
    # one long session of one step over and over, then a second like it: slices of 8 keys that
    # repeat 2, so past the first slice every slice holds the same keys
    texts = [hdfs_line(1, "blk_7", i) for i in range(60)] + [hdfs_line(1, "blk_8", i) for i in range(60)]
    made: list = []
    assert live_vs_whole(ckpt, WindowConfig(), "session", [7, 30, 100], texts=texts,
                         live_out=made, slice_keys=8, overlap=2) == 120
    prefixes = made[0].prefixes
    # the first two batches ran (a job runs on from its first unknown key); the third batch, the
    # rest of blk_7 and all of blk_8, came from the cache (whole prefixes: blk_7's rest would run)
    assert (prefixes.misses, prefixes.hits) == (7 + 30, 120 - 37)


@pytest.mark.parametrize(("size", "step"), [(4, 4), (5, 2)])
def test_live_ranks_equal_whole_count_window_scoring(ckpt: Path, size: int, step: int) -> None:
    cfg = WindowConfig(window_size=size, step=step)
    assert live_vs_whole(ckpt, cfg, "count", [3, 4, 100]) == len(interleaved())


def test_live_ranks_equal_whole_time_window_scoring(ckpt: Path) -> None:
    cfg = WindowConfig(window_seconds=2.0, step_seconds=1.0)
    assert live_vs_whole(ckpt, cfg, "time", [2, 9, 100]) == len(interleaved())


def test_live_flags_by_kind_with_context(ckpt: Path) -> None:
    from logllama_tui.live_engine import EngineSpec, open_engine

    engine = open_engine(EngineSpec(model=str(ckpt)), lambda level, msg: None)
    lines = [Line("f", i + 1, t) for i, t in enumerate(session("blk_5", (0, 1, "unseen", 3)))]
    vs = engine.live.process(list(engine.fmt.records(lines)))
    assert [v.kind for v in vs] == [None, None, "unseen", "rank"]
    assert vs[3].candidates[0][2].startswith("PacketResponder")  # what it expected instead
    assert [c[0] for c in vs[3].context] == [1, 2, 3]
    assert engine.info["k"] == 1 and engine.info["format"] == "hdfs"


def test_plain_json_all_from_stdin(ckpt: Path) -> None:
    from logllama_tui.cli import cli

    text = "\n".join(interleaved()) + "\n"
    result = CliRunner().invoke(cli, ["tail", "-", "--model", str(ckpt), "--json", "--all"],
                                input=text)
    assert result.exit_code == 0, result.output
    rows = [json.loads(s) for s in result.stdout.splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(interleaved()) + 1))
    assert {"file", "line", "text", "key", "template", "anomaly", "kind", "rank",
            "candidates"} <= set(rows[0])
    flagged = [(r["line"], r["kind"]) for r in rows if r["anomaly"]]
    assert (9, "unseen") in flagged
    assert all(r["file"] == "-" for r in rows)


def test_plain_text_only_anomalies(ckpt: Path) -> None:
    from logllama_tui.cli import cli

    text = "\n".join(session("blk_9", (0, 2, 3))) + "\n"
    result = CliRunner().invoke(cli, ["tail", "-", "--model", str(ckpt), "--plain"], input=text)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-:2: [rank ")
    assert "expected" in result.stdout and "Received block" in result.stdout
    assert "-:1:" not in result.stdout


def test_plain_bad_model_is_one_clear_line(tmp_path: Path) -> None:
    from logllama_tui.cli import cli

    result = CliRunner().invoke(cli, ["tail", "-", "--model", str(tmp_path / "nope"), "--plain"],
                                input="x\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no model") and "Traceback" not in result.output


def test_plain_sigterm_flushes_and_exits(ckpt: Path, tmp_path: Path) -> None:
    import threading

    log = tmp_path / "live.log"
    log.write_text("old line, skipped\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "logllama_tui", "tail", str(log), "--model", str(ckpt), "--plain",
         "--json", "--all", "--poll-interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    written: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not got:  # keep writing until the model is up and lines flow
            assert time.monotonic() < deadline and proc.poll() is None, "no output from tail --plain"
            written.append(hdfs_line(0, f"blk_{len(written) + 1}"))
            append_line(log, written[-1])
            time.sleep(0.2)
        written.append(hdfs_line(1, "blk_999"))
        append_line(log, written[-1])
        time.sleep(0.2)  # read by the follower, maybe not yet scored: SIGTERM must flush it
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(5)
        err = proc.stderr.read() if proc.stderr is not None else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    texts = [json.loads(s)["text"] for s in got if s.strip()]
    # lines written before the follower started are old content (skipped); from then on,
    # every line exactly once, in order, the last one included
    assert texts and texts == written[len(written) - len(texts):], err
    assert "Traceback" not in err


def append_line(path: Path, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")
