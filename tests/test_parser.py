"""LogParser and Vocabulary: literal lines in, exact keys and templates out; safe state round trips."""

from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path

import pytest
from drain3 import TemplateMiner

from logllama_tui.config import BOS, EOS, FIRST_KEY, PAD, UNK, ParserConfig
from logllama_tui.errors import BadCheckpoint, BadInput
from logllama_tui.parser import LogParser, Vocabulary
from logllama_tui.records import Record

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def rec(content: str, lineno: int = 1, **kw: object) -> Record:
    return Record("t.log", lineno, content, content, **kw)  # type: ignore[arg-type]


SMALL_LOG = [
    "user alice logged in from 10.0.0.1:22",
    "user bob logged in from 10.0.0.2:22",
    "PacketResponder 1 for block blk_-123 terminating",
    "PacketResponder 2 for block blk_456 terminating",
    "Received block blk_789 of size 67108864 from /10.250.19.102",
    "disk /dev/sda1 is 93% full",
    "user carol logged in from 10.0.0.3:22",
    "open file 0x7fff12 failed",
    "job 2d3f0c1e-1b2a-4c5d-9e8f-0a1b2c3d4e5f finished",
    "",
]


def learned(lines: list[str], cfg: ParserConfig | None = None) -> LogParser:
    p = LogParser(cfg)
    for i, line in enumerate(lines, 1):
        p.learn(rec(line, i))
    return p


def test_vocabulary_reserved_add_key_name_frozen() -> None:
    v = Vocabulary()
    assert (len(v), v.n_keys) == (4, 0)
    assert [v.name(k) for k in (PAD, BOS, EOS, UNK)] == ["<pad>", "<s>", "</s>", "<unseen>"]
    assert v.add("c1") == FIRST_KEY and v.add("E5") == 5 and v.add("c1") == FIRST_KEY
    assert (len(v), v.n_keys, v.key("E5"), v.key("nope"), v.name(5)) == (6, 2, 5, UNK, "E5")
    v.frozen = True
    assert v.add("new") == UNK and v.add("E5") == 5 and len(v) == 6
    with pytest.raises(KeyError):
        v.name(6)


def test_learn_gives_exact_keys_and_masked_templates() -> None:
    p = LogParser()
    got = [(e.key, e.template) for e in (p.learn(rec(line)) for line in SMALL_LOG)]
    assert got == [
        (4, "user alice logged in from <IP>"),
        (4, "user <*> logged in from <IP>"),
        (5, "PacketResponder <NUM> for block <BLK> terminating"),
        (5, "PacketResponder <NUM> for block <BLK> terminating"),
        (6, "Received block <BLK> of size <NUM> from /<IP>"),
        (7, "disk <PATH> is <NUM>% full"),
        (4, "user <*> logged in from <IP>"),
        (8, "open file <HEX> failed"),
        (9, "job <UUID> finished"),
        (10, ""),
    ]
    assert (len(p.vocab), p.vocab.n_keys) == (11, 7)
    assert p.template(4) == "user <*> logged in from <IP>"
    assert [p.template(k) for k in range(4)] == ["<pad>", "<s>", "</s>", "<unseen>"]


def test_match_is_frozen_and_unseen_is_unk_with_masked_content() -> None:
    p = learned(SMALL_LOG)
    size = len(p.vocab)
    assert p.match(rec("user dave logged in from 192.168.1.1:80")).key == 4
    ev = p.match(rec("kernel panic at 0xdeadbeef   now"))
    assert (ev.key, ev.template) == (UNK, "kernel panic at <HEX> now")
    assert p.match(rec("PacketResponder 7 for block blk_1 terminating")).key == 5
    assert len(p.vocab) == size and p.vocab.n_keys == 7


def test_event_ids_learn_and_match() -> None:
    p = LogParser()
    e1 = p.learn(rec("x", event_id="E5", template="Receiving block <*>"))
    e2 = p.learn(rec("y", event_id="E7"))
    assert (e1.key, e1.template, e2.key, e2.template) == (4, "Receiving block <*>", 5, "E7")
    assert p.match(rec("z", event_id="E5")).key == 4
    unseen = p.match(rec("z", event_id="E99", template="Something <*>"))
    assert (unseen.key, unseen.template) == (UNK, "Something <*>")
    assert p.template(4) == "Receiving block <*>" and p.vocab.name(5) == "E7"


def test_match_cache_is_invalidated_by_learning() -> None:
    p = learned(["alpha one two"])
    line = rec("beta three four")
    assert p.match(line).key == UNK
    assert p.match(line).key == UNK  # served from the cache
    assert p.learn(line).key == 5
    assert p.match(line).key == 5


def test_fallback_search_finds_what_the_tree_misses() -> None:
    lines = ["1 open file", "2 open file", "abc foo bar"]
    probe = rec("abc open file")
    assert learned(lines, ParserConfig(masks=())).match(probe).key == FIRST_KEY
    never = LogParser(ParserConfig(masks=()), match_strategy="never")
    for line in lines:
        never.learn(rec(line))
    assert never.match(probe).key == UNK
    with pytest.raises(BadInput):
        LogParser(match_strategy="sometimes")


def test_hostile_drain3_ini_in_cwd_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "drain3.ini").write_text(
        "[DRAIN]\nsim_th = 0.99\n[MASKING]\n"
        'masking = [{"regex_pattern": "logged", "mask_with": "HACK"}]\n'
    )
    monkeypatch.chdir(tmp_path)
    bare = TemplateMiner()  # drain3's default really reads ./drain3.ini ...
    assert bare.config.drain_sim_th == 0.99
    p = LogParser(ParserConfig(masks=()))  # ... ours never does
    assert p.miner.config.drain_sim_th == 0.4 and p.miner.persistence_handler is None
    p.learn(rec("user alice logged in"))
    assert p.learn(rec("user bob logged in")).template == "user <*> logged in"


def assert_same_keys(p: LogParser, records: list[Record], path: Path) -> None:
    before = [(e.key, e.template) for e in map(p.match, records)]
    p.save(path)
    q = LogParser.load(path)
    after = [(e.key, e.template) for e in map(q.match, records)]
    assert after == before
    assert q.to_json() == p.to_json()
    assert [q.template(k) for k in range(len(q.vocab))] == [p.template(k) for k in range(len(p.vocab))]


@pytest.mark.parametrize("cfg", [ParserConfig(), ParserConfig(max_clusters=3, sim_th=0.7, depth=3)])
def test_round_trip_small_literal_log(tmp_path: Path, cfg: ParserConfig) -> None:
    p = learned(SMALL_LOG, cfg)
    probes = [rec(line) for line in SMALL_LOG + ["user eve logged in from 1.2.3.4", "never seen"]]
    assert_same_keys(p, probes, tmp_path / "parser.json")
    q = LogParser.load(tmp_path / "parser.json")  # it keeps learning the same way too
    more = ["disk /dev/sdb is 5% full", "brand new line here", "job 1 finished"]
    assert [p.learn(rec(s)).key for s in more] == [q.learn(rec(s)).key for s in more]
    assert [f.name for f in tmp_path.iterdir()] == ["parser.json"]  # no temp file left behind


def _hdfs_records(n: int) -> list[Record]:
    path = DATA / "hdfs" / "HDFS_dev.log"
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(itertools.islice(fh, n), 1):
            head = line.rstrip("\n").split(" ", 5)
            out.append(rec(head[-1].split(": ", 1)[-1], i))
    return out


def _loghub_records(system: str) -> list[Record]:
    path = DATA / "loghub" / system / f"{system}_2k.log_structured.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        return [rec(row["Content"], i) for i, row in enumerate(csv.DictReader(fh), 1)]


@pytest.mark.skipif(not (DATA / "hdfs" / "HDFS_dev.log").exists(), reason="no ../shared/data")
def test_round_trip_real_data(tmp_path: Path) -> None:
    hdfs = _hdfs_records(50_000)
    p = LogParser()
    for r in hdfs[:40_000]:
        p.learn(r)
    assert p.vocab.n_keys > 10
    assert_same_keys(p, hdfs, tmp_path / "hdfs.json")
    for system in ("Linux", "Mac", "OpenStack", "Android"):
        records = _loghub_records(system)
        p = LogParser()
        for r in records[:1500]:
            p.learn(r)
        assert_same_keys(p, records, tmp_path / f"{system}.json")


def _good_state() -> dict:
    return learned(SMALL_LOG).to_json()


def _load_text(tmp_path: Path, text: str | bytes) -> LogParser:
    path = tmp_path / "state.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return LogParser.load(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.update(version=True), "version True is not supported"),
        (lambda d: d.pop("drain"), "missing drain"),
        (lambda d: d.update(extra=1), "unknown fields extra"),
        (lambda d: d["config"].update(depth="4"), "'depth' has a wrong type"),
        (lambda d: d["config"].update(sim_th=1.5), "'sim_th' has a wrong type or range"),
        (lambda d: d["config"].update(masks=[["(", "X"]]), "does not compile"),
        (lambda d: d["config"].update(surprise=1), "unknown parser setting"),
        (lambda d: d["vocab"].update(names=["c1", "c1"] + d["vocab"]["names"][2:]), "unique"),
        (lambda d: d["vocab"]["templates"].pop(), "one per name"),
        (lambda d: d["drain"]["clusters"][0].__setitem__(0, 999), "1..clusters_counter"),
        (lambda d: d["drain"]["clusters"][0].__setitem__(2, 0), "size >= 1"),
        (lambda d: d["drain"].update(tree={"children": {"x": {}}}), "token counts"),
        (lambda d: d["drain"].update(tree={"children": {"1": {"children": {"a": {"children": {
            "b": {"children": {"c": {"children": {"d": {}}}}}}}}}}}), "deeper"),
        (lambda d: d["drain"].update(tree={"ids": [77]}), "not in 'clusters'"),
        (lambda d: d["drain"]["clusters"].__setitem__(0, {"py/object": "os.system"}), "jsonpickle"),
    ],
)
def test_from_json_refuses_bad_states(tmp_path: Path, mutate, message: str) -> None:
    state = _good_state()
    mutate(state)
    with pytest.raises(BadCheckpoint, match=message):
        LogParser.from_json(json.loads(json.dumps(state)))
    with pytest.raises(BadCheckpoint, match=message):
        _load_text(tmp_path, json.dumps(state))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ('{"format": "logllama-parser", "version": 1', "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"a": 1}', "not a logllama parser state"),
        (b"\x80\x04\x95pickle", "not UTF-8 JSON"),
        ('{"format": NaN}', "not valid JSON"),
        ('{"format": "x", "format": "y"}', "duplicate key"),
        ("[" * 200_000, "not valid JSON"),
    ],
)
def test_load_refuses_corrupt_or_foreign_files(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(BadCheckpoint, match=message):
        _load_text(tmp_path, text)


def test_load_missing_file_and_save_into_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(BadCheckpoint, match="does not exist"):
        LogParser.load(tmp_path / "nope.json")
    with pytest.raises(BadCheckpoint, match="not a file"):
        LogParser.load(tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        learned(SMALL_LOG).save(tmp_path / "no" / "such" / "dir.json")


def test_jsonpickle_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = _good_state()
    state["vocab"]["frozen"] = {
        "py/reduce": [{"py/function": "os.system"}, {"py/tuple": [f"touch {marker}"]}]
    }
    with pytest.raises(BadCheckpoint, match="jsonpickle"):
        _load_text(tmp_path, json.dumps(state))
    assert not marker.exists()


def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("old")
    p = learned(SMALL_LOG)
    p.save(path)
    assert json.loads(path.read_text()) == p.to_json()
    assert sorted(os.listdir(tmp_path)) == ["p.json"]


def test_presets_apply_over_a_base_and_refuse_unknown_systems() -> None:
    from logllama_tui.presets import DRAIN_SETTINGS, LOGHUB_PRESETS, drain_config, preset_config

    assert drain_config("openssh") == ParserConfig(
        masks=((r"(\d+\.){3}\d+", "*"), (r"([\w-]+\.){2,}[\w-]+", "*")), sim_th=0.6, depth=5)
    cfg = preset_config("Linux", ParserConfig(max_children=7))
    assert (cfg.sim_th, cfg.depth, cfg.max_children) == (0.6, 6, 7)
    assert set(LOGHUB_PRESETS) == set(DRAIN_SETTINGS)
    with pytest.raises(BadInput, match="no parser preset"):
        preset_config("Windows95")
    p = LogParser(drain_config("HDFS"))
    assert p.learn(rec("Received block blk_-1 from 10.0.0.1:50010")).template == "Received block <*> from <*>"


def test_match_cache_stops_filling_when_it_never_hits_and_probes_again() -> None:
    from logllama_tui import parser as P

    p = learned(["request 1 served", "request 2 served"], ParserConfig(masks=()))
    for i in range(P.CACHE_WINDOW):
        assert p.match(rec(f"request {i} served")).key == FIRST_KEY
    assert not p._caching
    for i in range(P.CACHE_WINDOW * P.CACHE_PROBE_EVERY):
        p.match(rec(f"request {i + 10**6} served"))  # all new: every one a miss
    assert p._caching
    p.cache_size = 0
    for _ in range(3):
        assert p.match(rec("request 5 served")).key == FIRST_KEY
    assert p._cache == {}


def test_event_id_template_arrives_later_and_survives_a_round_trip(tmp_path: Path) -> None:
    p = LogParser()
    assert p.learn(rec("x", event_id="E1")).template == "E1"
    assert p.learn(rec("x", event_id="E1", template="Opened <*>")).template == "Opened <*>"
    assert p.learn(rec("x", event_id="E1", template="Something else")).template == "Opened <*>"
    p.save(tmp_path / "p.json")
    q = LogParser.load(tmp_path / "p.json")
    assert (q.template(4), q.match(rec("y", event_id="E1")).key) == ("Opened <*>", 4)
