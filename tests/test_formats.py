"""Formats: lines -> records (built-ins, loghub format strings, parsed inputs) and sniffing."""

from __future__ import annotations

import calendar
import csv
import itertools
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logllama_tui.errors import BadInput
from logllama_tui.formats import LOGHUB_FORMATS, detect, get_format, pattern_regex, sniff_format
from logllama_tui.readers import iter_lines
from logllama_tui.records import Line, Record

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_logs"
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "loghub").is_dir(), reason="../shared/data is not here")


def utc(*t: int) -> float:
    return float(calendar.timegm((*t, 0, 0, 0)[:6]))


def parse(fmt: str, *texts: str) -> list[Record]:
    return list(get_format(fmt).records(Line("t.log", i, t) for i, t in enumerate(texts, 1)))


def test_hdfs_line_splits_into_fields() -> None:
    (r,) = parse("hdfs", "081109 203532 147 INFO dfs.DataNode$DataXceiver: Receiving block blk_-16 src: /10.0.0.1:5")
    assert (r.level, r.component, r.content) == ("INFO", "dfs.DataNode$DataXceiver", "Receiving block blk_-16 src: /10.0.0.1:5")
    assert r.timestamp == utc(2008, 11, 9, 20, 35, 32)
    assert (r.source, r.lineno, r.label) == ("t.log", 1, None)


def test_a_line_that_does_not_fit_is_kept_whole_and_counted() -> None:
    fmt = get_format("hdfs")
    recs = list(fmt.records([Line("x", 1, "garbage line"), Line("x", 2, "")]))
    assert [(r.lineno, r.content, r.timestamp) for r in recs] == [(1, "garbage line", None), (2, "", None)]
    assert fmt.unmatched == 2


def test_bgl_line_has_label_level_and_fine_timestamp() -> None:
    normal, alert = parse(
        "bgl",
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.363779 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected",
        "KERNDTLB 1118536327 2005.06.11 R30-M0-N9-C:J16-U01 2005-06-11-17.32.07.581048 R30-M0-N9-C:J16-U01 RAS KERNEL FATAL data TLB error interrupt",
    )
    assert (normal.label, normal.is_alert, normal.level, normal.component) == ("-", False, "INFO", "KERNEL")
    assert normal.content == "instruction cache parity error corrected"
    assert normal.timestamp == pytest.approx(1117838570.363779)
    assert (alert.label, alert.is_alert, alert.content) == ("KERNDTLB", True, "data TLB error interrupt")


def test_thunderbird_content_follows_program_pid() -> None:
    a, b = parse(
        "thunderbird",
        "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed for user root",
        "VAPI 1131566462 2005.11.09 tbird-admin1 Nov 9 12:01:02 local@tbird-admin1 no program here",
    )
    assert (a.label, a.component, a.content, a.timestamp) == ("-", "crond(pam_unix)", "session closed for user root", 1131566461.0)
    assert (b.label, b.is_alert, b.component, b.content) == ("VAPI", True, None, "no program here")


def test_syslog_classic_3164_and_5424() -> None:
    classic, pri, rfc5424, iso = parse(
        "syslog",
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=218.188.2.4 ",
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        '<165>1 2003-10-11T22:14:15.003Z host.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="App"] An application event',
        "2023-11-01T12:34:56.123456+00:00 myhost systemd[1]: Started Session 5 of user bob.",
    )
    assert (classic.component, classic.content) == ("sshd(pam_unix)", "authentication failure; rhost=218.188.2.4")
    assert (pri.component, pri.level, pri.content) == ("su", "CRIT", "'su root' failed for lonvick on /dev/pts/8")
    assert (rfc5424.component, rfc5424.level, rfc5424.content) == ("evntslog", "NOTICE", "An application event")
    assert rfc5424.timestamp == pytest.approx(utc(2003, 10, 11, 22, 14, 15) + 0.003)
    assert (iso.component, iso.content) == ("systemd", "Started Session 5 of user bob.")


def test_yearless_syslog_timestamps_stay_monotone_across_new_year() -> None:
    recs = parse("syslog", "Dec 31 23:59:59 h a: x", "Jan  1 00:00:01 h a: y", "Jan  1 00:00:02 h a: z")
    ts = [r.timestamp for r in recs]
    assert ts[1] - ts[0] == pytest.approx(2.0) and ts[2] - ts[1] == pytest.approx(1.0)


def test_raw_takes_the_whole_line() -> None:
    (r,) = parse("raw", "  anything at all  ")
    assert (r.content, r.timestamp, r.text) == ("anything at all", None, "  anything at all  ")


def test_loghub_pattern_extracts_named_fields() -> None:
    (r,) = parse("<Date> <Time> <Pid> <Level> <Component>: <Content>",
                 "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38 terminating")
    assert (r.level, r.component, r.content) == ("INFO", "dfs.DataNode$PacketResponder", "PacketResponder 1 for block blk_38 terminating")
    assert r.timestamp == utc(2008, 11, 9, 20, 36, 15)
    (a,) = parse(LOGHUB_FORMATS["Apache"], "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6")
    assert (a.level, a.content, a.timestamp) == ("error", "mod_jk child workerEnv in error state 6", utc(2005, 12, 4, 4, 47, 44))


def test_a_bare_bar_in_a_pattern_is_a_literal_bar() -> None:
    line = "20171223-22:15:29:606|Step_LSRService|30002312|onExtend:1514038530000 14 0 4"
    for pattern in ("<Time>|<Component>|<Pid>|<Content>", r"<Time>\|<Component>\|<Pid>\|<Content>"):
        _, regex = pattern_regex(pattern)
        fields = regex.match(line).groupdict()
        assert fields["Pid"] == "30002312" and fields["Content"] == "onExtend:1514038530000 14 0 4", pattern


def test_pattern_that_matches_none_of_the_first_lines_is_bad_input() -> None:
    fmt = get_format(r"\[<Time>\] <Content>")
    with pytest.raises(BadInput, match=r"matches none of the first 20 lines.*first line: 'plain 0'"):
        list(fmt.records(Line("f.log", i, f"plain {i}") for i in range(25)))
    with pytest.raises(BadInput, match="matches no line"):
        list(get_format(r"\[<Time>\] <Content>").records([Line("f.log", 1, "plain")]))


def test_pattern_tolerates_a_few_odd_lines() -> None:
    fmt = get_format(r"\[<Time>\] <Content>")
    recs = list(fmt.records(Line("f", i, t) for i, t in enumerate(["odd", "[t] ok", "odd again"], 1)))
    assert [r.content for r in recs] == ["odd", "ok", "odd again"] and fmt.unmatched == 2


@pytest.mark.parametrize("bad, needle", [
    ("<Date> <Time>", "no <Content> field"),
    ("<Da te> <Content>", "unique name"),
    ("<A> <A> <Content>", "unique name"),
    ("(<A> <Content>", "not a valid pattern"),
    ("jsonish", "unknown format 'jsonish'; choose one of auto, hdfs, bgl"),
    ("loghub:Nope", "unknown loghub system"),
])
def test_bad_format_names_and_strings(bad: str, needle: str) -> None:
    with pytest.raises(BadInput, match=re.escape(needle)):
        get_format(bad)


def test_get_format_accepts_names_in_any_case_and_loghub_systems() -> None:
    assert get_format("HDFS").name == "hdfs"
    assert get_format("loghub:openssh").name == "loghub:OpenSSH"
    assert get_format("hdfs") is not get_format("hdfs")  # fresh state each time
    assert {get_format(n).default_window for n in ("hdfs", "bgl", "raw")} == {"session", "time", "count"}


@pytest.mark.parametrize("system", sorted(LOGHUB_FORMATS))
def test_no_pattern_backtracks_for_ever_on_a_line_that_does_not_fit(system: str) -> None:
    regex = pattern_regex(LOGHUB_FORMATS[system])[1]
    hostile = " : ".join(["x y [a] |b| - @ , (c)" + " " * 40] * 400)
    start = time.perf_counter()
    regex.match(hostile)
    assert time.perf_counter() - start < 0.5


def test_structured_sample_gets_templates_from_the_sibling_file() -> None:
    fmt = get_format("structured")
    recs = list(fmt.records(iter_lines(str(SAMPLES / "bgl_sample_structured.csv"))))
    assert len(recs) == 4000 and fmt.templates_path.endswith("bgl_sample_templates.csv")
    assert all(r.event_id and r.template for r in recs)
    assert recs[0].lineno == 2 and recs[0].content == recs[0].template
    alerts = [r for r in recs if r.is_alert]
    assert 0 < len(alerts) < len(recs) and {r.label for r in alerts} <= {"KERNDTLB", "KERNRTSP", "KERNMC"}
    ts = [r.timestamp for r in recs]
    assert all(t is not None for t in ts) and ts == sorted(ts)
    stamp = recs[0].text.split(",")[1]  # e.g. 2005-06-03-15.42.50.363779, read as UTC
    expected = datetime.strptime(stamp, "%Y-%m-%d-%H.%M.%S.%f").replace(tzinfo=UTC).timestamp()
    assert recs[0].timestamp == pytest.approx(expected)


def test_loghub_structured_csv_with_quoted_content(tmp_path: Path) -> None:
    p = tmp_path / "X_2k.log_structured.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["LineId", "Date", "Time", "Level", "Content", "EventId", "EventTemplate", "Label"])
        w.writerow([1, "2015-10-18", "18:01:47,978", "INFO", 'a, "quoted"\nvalue 7', "E1", "a, <*>", "-"])
        w.writerow([2, "2015-10-18", "18:01:48,000", "WARN", "b 8", "E2", "b <*>", "Anomaly"])
    fmt = get_format("structured")
    a, b = fmt.records(iter_lines(str(p)))
    assert (a.content, a.event_id, a.template, a.level, a.label) == ('a, "quoted"\nvalue 7', "E1", "a, <*>", "INFO", "-")
    assert a.timestamp == pytest.approx(utc(2015, 10, 18, 18, 1, 47) + 0.978)
    assert (b.lineno, b.label, b.is_alert) == (4, "Anomaly", True)


def test_csv_without_event_id_is_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("BlockId,Label\nblk_1,Normal\n")
    with pytest.raises(BadInput, match="no EventId"):
        list(get_format("structured").records(iter_lines(str(p))))


def test_deeplog_sessions_become_keyed_records(tmp_path: Path) -> None:
    p = tmp_path / "keys"
    p.write_text("5 5 22 \n\n9 11\n")
    recs = list(get_format("deeplog").records(iter_lines(str(p))))
    assert [(r.event_id, r.lineno, r.sessions) for r in recs] == [
        ("5", 1, (f"{p}#1",)), ("5", 1, (f"{p}#1",)), ("22", 1, (f"{p}#1",)),
        ("9", 3, (f"{p}#3",)), ("11", 3, (f"{p}#3",))]


def test_deeplog_sample_has_300_sessions() -> None:
    recs = list(get_format("deeplog").records(iter_lines(str(SAMPLES / "deeplog_sample"))))
    assert len({r.sessions for r in recs}) == 300 and all(r.event_id.isdigit() for r in recs)


def test_deeplog_on_a_text_log_is_bad_input() -> None:
    with pytest.raises(BadInput, match="DeepLog key file"):
        list(get_format("deeplog").records(iter_lines(str(SAMPLES / "linux_sample.log"))))


@pytest.mark.parametrize("name, expected", [
    ("hdfs_sample.log", "hdfs"), ("bgl_sample.log", "bgl"), ("thunderbird_sample.log", "thunderbird"),
    ("linux_sample.log", "syslog"), ("deeplog_sample", "deeplog"), ("bgl_sample_structured.csv", "structured"),
])
def test_sniffing_the_samples(name: str, expected: str) -> None:
    path = str(SAMPLES / name)
    head = [ln.text for ln in itertools.islice(iter_lines(path), 20)]
    assert sniff_format(head, path) == expected
    fmt, reason = detect(path, head)
    assert fmt.name == expected and reason


def test_sniffing_falls_back_to_raw_and_says_why() -> None:
    assert sniff_format(["hello world", "nothing structured here"]) == "raw"
    fmt, reason = detect("x", [])
    assert fmt.name == "raw" and "no lines" in reason


def test_every_sample_line_of_the_samples_parses_with_its_sniffed_format() -> None:
    for name in ("hdfs_sample.log", "bgl_sample.log", "thunderbird_sample.log", "linux_sample.log"):
        lines = list(iter_lines(str(SAMPLES / name)))
        fmt, _ = detect(str(SAMPLES / name), [ln.text for ln in lines[:20]])
        recs = list(fmt.records(lines))
        assert len(recs) == len(lines) and fmt.unmatched == 0, name


SNIFFED = {
    "bgl/BGL_first10k.log": "bgl", "thunderbird/Thunderbird_2k.log": "thunderbird",
    "hdfs/HDFS_dev.log": "hdfs", "deeplog/hdfs_train": "deeplog", "deeplog/hdfs_test_abnormal": "deeplog",
    "bgl/BGL_100k_structured.csv": "structured", "loghub/HDFS/HDFS_2k.log": "hdfs",
    "loghub/Linux/Linux_2k.log": "syslog", "loghub/OpenSSH/OpenSSH_2k.log": "syslog",
    "loghub/Mac/Mac_2k.log": "syslog", "loghub/HPC/HPC_2k.log": "raw",
    **{f"loghub/{s}/{s}_2k.log": f"loghub:{s}" for s in (
        "Android", "Apache", "Hadoop", "HealthApp", "OpenStack", "Proxifier", "Spark", "Windows", "Zookeeper")},
    **{f"loghub/{s}/{s}_2k.log_structured.csv": "structured" for s in LOGHUB_FORMATS if s not in ("BGL", "Thunderbird")},
}


@needs_data
@pytest.mark.parametrize("rel", sorted(SNIFFED))
def test_sniffing_the_shared_data(rel: str) -> None:
    path = str(DATA / rel)
    head = [ln.text for ln in itertools.islice(iter_lines(path), 20)]
    fmt, _ = detect(path, head)
    assert fmt.name == SNIFFED[rel]


@needs_data
@pytest.mark.parametrize("system", sorted(s for s in LOGHUB_FORMATS if s not in ("BGL", "Thunderbird")))
def test_loghub_content_equals_the_structured_csv(system: str) -> None:
    base = DATA / "loghub" / system / f"{system}_2k.log"
    fmt = get_format(LOGHUB_FORMATS[system])
    recs = list(fmt.records(iter_lines(str(base))))
    with open(f"{base}_structured.csv", newline="", encoding="utf-8") as f:
        truth = [row["Content"] for row in csv.DictReader(f)]
    assert len(recs) == len(truth)
    same = sum(r.content == c for r, c in zip(recs, truth, strict=True))
    assert same / len(truth) >= 0.99, f"{system}: {same}/{len(truth)}"


def test_hdfs_sample_holds_exactly_the_labelled_blocks_whole() -> None:
    with open(SAMPLES / "hdfs_sample_labels.csv", newline="") as f:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(f)}
    recs = list(get_format("hdfs").records(iter_lines(str(SAMPLES / "hdfs_sample.log"))))
    blocks = {b for r in recs for b in re.findall(r"blk_-?\d+", r.content)}
    assert blocks == set(labels)
    assert sorted(labels.values()).count("Anomaly") == 40 and len(labels) == 440
    ts = [r.timestamp for r in recs]
    assert ts == sorted(ts)  # original time order kept


def test_sample_logs_stay_small_and_documented() -> None:
    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file())
    assert total < 3 * 1024 * 1024
    readme = (SAMPLES / "README.md").read_text()
    for p in SAMPLES.iterdir():
        if p.is_file() and p.name not in ("README.md", "make_samples.py"):
            assert f"`{p.name}`" in readme, p.name
