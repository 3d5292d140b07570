"""Streaming windowers: sessions, time windows, count windows."""

from __future__ import annotations

import pytest

from logllama_tui.config import WindowConfig
from logllama_tui.errors import BadInput
from logllama_tui.records import Event, Record, Sequence
from logllama_tui.windows import (
    CountWindower,
    SessionWindower,
    TimeWindower,
    make_windower,
    resolve_mode,
)


def ev(lineno: int, key: int, text: str = "", ts: float | None = None, source: str = "a.log",
       sessions: tuple[str, ...] = ()) -> Event:
    rec = Record(source, lineno, text, text, timestamp=ts, sessions=sessions)
    return Event(rec, key, "t")


def shape(seqs: list[Sequence]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each sequence as (sid, [(lineno, key), ...]): keys[i] must come from records[i]."""
    out = []
    for s in seqs:
        assert len(s.keys) == len(s.records)
        out.append((s.sid, [(r.lineno, k) for r, k in zip(s.records, s.keys, strict=True)]))
    return out


def feed_all(w, events: list[Event]) -> list[Sequence]:
    out: list[Sequence] = []
    for e in events:
        out += w.feed(e)
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- sessions ------------------------------------------------------------------------------


def test_session_groups_by_regex_and_flushes_in_lru_order() -> None:
    w = SessionWindower(WindowConfig(mode="session"))
    done = feed_all(w, [
        ev(1, 4, "open blk_1"), ev(2, 5, "open blk_-2"), ev(3, 6, "close blk_1"),
    ])
    assert done == []
    assert w.open_count == 2
    assert shape(w.flush()) == [("blk_-2", [(2, 5)]), ("blk_1", [(1, 4), (3, 6)])]
    assert w.open_count == 0


def test_recent_lists_open_sessions_most_recently_fed_first() -> None:
    w = SessionWindower(WindowConfig(mode="session"))
    for i, sid in enumerate([1, 2, 3, 1]):
        w.feed(ev(i + 1, 4, f"x blk_{sid}"))
    assert [s.sid for s in w.recent()] == ["blk_1", "blk_3", "blk_2"]


def test_session_line_naming_two_sessions_joins_both_but_one_twice_counts_once() -> None:
    w = SessionWindower(WindowConfig(mode="session"))
    feed_all(w, [ev(1, 4, "copy blk_1 to blk_2"), ev(2, 5, "blk_1 again blk_1")])
    assert shape(w.flush()) == [("blk_2", [(1, 4)]), ("blk_1", [(1, 4), (2, 5)])]


def test_session_ids_from_the_format_win_over_the_regex() -> None:
    w = SessionWindower(WindowConfig(mode="session"))
    feed_all(w, [ev(1, 7, "blk_9", sessions=("s1",)), ev(2, 8, "x", sessions=("s1", "s1", "s2"))])
    assert shape(w.flush()) == [("s1", [(1, 7), (2, 8)]), ("s2", [(2, 8)])]


def test_session_regex_with_groups_uses_the_whole_match() -> None:
    w = SessionWindower(WindowConfig(mode="session", session_regex=r"req=(\d+)"))
    feed_all(w, [ev(1, 4, "a req=12"), ev(2, 5, "b req=12 req=13")])
    assert shape(w.flush()) == [("req=12", [(1, 4), (2, 5)]), ("req=13", [(2, 5)])]


def test_lines_without_session_are_counted_and_handed_to_the_callback() -> None:
    seen: list[int] = []
    w = SessionWindower(WindowConfig(mode="session"), on_orphan=lambda e: seen.append(e.record.lineno))
    feed_all(w, [ev(1, 4, "no id"), ev(2, 5, "blk_3"), ev(3, 6, "still none")])
    assert w.orphans == 2
    assert seen == [1, 3]
    assert shape(w.flush()) == [("blk_3", [(2, 5)])]


def test_session_idle_past_timeout_in_log_time_is_closed_by_a_later_line() -> None:
    w = SessionWindower(WindowConfig(mode="session", session_timeout=10))
    assert w.feed(ev(1, 4, "blk_1", ts=100)) == []
    assert w.feed(ev(2, 5, "blk_2", ts=105)) == []
    assert w.feed(ev(3, 6, "blk_2", ts=110)) == []  # blk_1 idle exactly 10 s: still open
    assert shape(w.feed(ev(4, 7, "blk_3", ts=111))) == [("blk_1", [(1, 4)])]
    assert shape(w.feed(ev(5, 8, "blk_1", ts=200))) == [("blk_2", [(2, 5), (3, 6)]),
                                                        ("blk_3", [(4, 7)])]
    assert shape(w.flush()) == [("blk_1", [(5, 8)])]


def test_session_lru_closes_least_recently_active_past_max_open() -> None:
    w = SessionWindower(WindowConfig(mode="session", max_open_sessions=2))
    assert feed_all(w, [ev(1, 4, "blk_1"), ev(2, 5, "blk_2"), ev(3, 6, "blk_1")]) == []
    assert shape(w.feed(ev(4, 7, "blk_3"))) == [("blk_2", [(2, 5)])]
    assert w.open_count == 2


def test_session_expire_uses_wall_clock_idle_time() -> None:
    clock = FakeClock()
    w = SessionWindower(WindowConfig(mode="session", session_timeout=5), clock=clock)
    w.feed(ev(1, 4, "blk_1"))
    clock.now = 3.0
    w.feed(ev(2, 5, "blk_2"))
    assert w.expire(5.0) == []
    assert shape(w.expire(6.5)) == [("blk_1", [(1, 4)])]
    assert shape(w.expire(100.0)) == [("blk_2", [(2, 5)])]
    assert w.open_count == 0


def test_session_memory_stays_bounded_with_ever_new_ids() -> None:
    w = SessionWindower(WindowConfig(mode="session", max_open_sessions=500))
    emitted = 0
    for i in range(50_000):
        emitted += len(w.feed(ev(i + 1, 4, f"blk_{i}", ts=float(i))))
        assert w.open_count <= 500
    assert emitted == 49_500
    assert len(w.flush()) == 500


def test_bad_session_regex_is_bad_input() -> None:
    with pytest.raises(BadInput, match="not a valid regular expression"):
        SessionWindower(WindowConfig(mode="session", session_regex="blk_("))


# ---- time windows --------------------------------------------------------------------------


def test_time_tumbling_windows_close_when_a_timestamp_reaches_their_end() -> None:
    w = TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=60))
    assert feed_all(w, [ev(1, 4, ts=0), ev(2, 5, ts=10), ev(3, 6, ts=59.5)]) == []
    assert shape(w.feed(ev(4, 7, ts=60))) == [("a.log@1970-01-01T00:00:00Z", [(1, 4), (2, 5), (3, 6)])]
    assert shape(w.flush()) == [("a.log@1970-01-01T00:01:00Z", [(4, 7)])]


def test_time_sliding_windows_put_a_line_in_every_window_covering_it() -> None:
    w = TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=30))
    assert w.feed(ev(1, 4, ts=100)) == []
    assert shape(w.feed(ev(2, 5, ts=140))) == [("a.log@1970-01-01T00:01:00Z", [(1, 4)])]
    assert shape(w.feed(ev(3, 6, ts=170))) == [("a.log@1970-01-01T00:01:30Z", [(1, 4), (2, 5)])]
    assert shape(w.flush()) == [("a.log@1970-01-01T00:02:00Z", [(2, 5), (3, 6)]),
                                ("a.log@1970-01-01T00:02:30Z", [(3, 6)])]


def test_time_lines_without_timestamp_join_the_current_window() -> None:
    w = TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=60))
    done = feed_all(w, [ev(1, 4), ev(2, 5, ts=65), ev(3, 6), ev(4, 7, ts=130)])
    assert shape(done) == [("a.log@1970-01-01T00:01:00Z", [(1, 4), (2, 5), (3, 6)])]
    assert shape(w.flush()) == [("a.log@1970-01-01T00:02:00Z", [(4, 7)])]


def test_time_out_of_order_within_window_is_kept_and_late_lines_join_the_next_window() -> None:
    w = TimeWindower(WindowConfig(mode="time", window_seconds=10, step_seconds=10))
    done = feed_all(w, [ev(1, 4, ts=8), ev(2, 5, ts=3), ev(3, 6, ts=12), ev(4, 7, ts=5)])
    assert shape(done) == [("a.log@1970-01-01T00:00:00Z", [(1, 4), (2, 5)])]
    assert w.late == 1
    assert shape(w.flush()) == [("a.log@1970-01-01T00:00:10Z", [(3, 6), (4, 7)])]


def test_time_jump_closes_older_windows_without_empty_ones() -> None:
    w = TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=60))
    feed_all(w, [ev(1, 4, ts=0), ev(2, 5, ts=70)])
    assert shape(w.feed(ev(3, 6, ts=86_400))) == [("a.log@1970-01-01T00:01:00Z", [(2, 5)])]
    assert shape(w.flush()) == [("a.log@1970-01-02T00:00:00Z", [(3, 6)])]


def test_time_windows_are_per_file_and_expire_by_wall_clock() -> None:
    clock = FakeClock()
    w = TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=60), clock=clock,
                     idle_seconds=5)
    w.feed(ev(1, 4, ts=0, source="a"))
    clock.now = 4.0
    w.feed(ev(1, 5, ts=1, source="b"))
    assert shape(w.expire(7.0)) == [("a@1970-01-01T00:00:00Z", [(1, 4)])]
    assert w.open_count == 1
    assert shape(w.feed(ev(2, 6, ts=2, source="a"))) == []  # its window is gone: joins the next
    assert shape(w.flush()) == [("a@1970-01-01T00:01:00Z", [(2, 6)]),
                                ("b@1970-01-01T00:00:00Z", [(1, 5)])]


def test_time_step_longer_than_window_is_bad_input() -> None:
    with pytest.raises(BadInput, match="step-seconds 90 is longer than --window-seconds 60"):
        TimeWindower(WindowConfig(mode="time", window_seconds=60, step_seconds=90))


# ---- count windows -------------------------------------------------------------------------


def test_count_tumbling_windows_and_trailing_partial() -> None:
    w = CountWindower(WindowConfig(mode="count", window_size=3, step=3))
    done = feed_all(w, [ev(i, 10 + i) for i in range(1, 8)])
    assert shape(done) == [("a.log#1", [(1, 11), (2, 12), (3, 13)]),
                           ("a.log#4", [(4, 14), (5, 15), (6, 16)])]
    assert shape(w.flush()) == [("a.log#7", [(7, 17)])]


def test_count_sliding_windows_flush_only_what_is_not_yet_emitted() -> None:
    w = CountWindower(WindowConfig(mode="count", window_size=4, step=2))
    done = feed_all(w, [ev(i, i) for i in range(1, 8)])
    assert [s.sid for s in done] == ["a.log#1", "a.log#3"]
    assert shape(done)[1] == ("a.log#3", [(3, 3), (4, 4), (5, 5), (6, 6)])
    assert shape(w.flush()) == [("a.log#5", [(5, 5), (6, 6), (7, 7)])]
    w2 = CountWindower(WindowConfig(mode="count", window_size=4, step=2))
    feed_all(w2, [ev(i, i) for i in range(1, 7)])
    assert w2.flush() == []


def test_count_windows_do_not_mix_files() -> None:
    w = CountWindower(WindowConfig(mode="count", window_size=2, step=2))
    done = feed_all(w, [ev(1, 4, source="x"), ev(1, 5, source="y"), ev(2, 6, source="x")])
    assert shape(done) == [("x#1", [(1, 4), (2, 6)])]
    assert shape(w.flush()) == [("y#1", [(1, 5)])]


def test_count_expire_emits_partial_and_starts_afresh() -> None:
    clock = FakeClock()
    w = CountWindower(WindowConfig(mode="count", window_size=3, step=3), clock=clock, idle_seconds=2)
    feed_all(w, [ev(1, 4), ev(2, 5)])
    assert w.expire(1.0) == []
    assert shape(w.expire(3.0)) == [("a.log#1", [(1, 4), (2, 5)])]
    assert w.expire(9.0) == []
    assert shape(feed_all(w, [ev(3, 6), ev(4, 7), ev(5, 8)])) == [("a.log#3", [(3, 6), (4, 7), (5, 8)])]
    assert w.flush() == []


def test_count_step_larger_than_size_is_bad_input() -> None:
    with pytest.raises(BadInput, match="--step 5 is larger than --window-size 3"):
        CountWindower(WindowConfig(mode="count", window_size=3, step=5))


# ---- factory -------------------------------------------------------------------------------


def test_make_windower_resolves_auto_to_the_format_default() -> None:
    assert isinstance(make_windower(WindowConfig(), "session"), SessionWindower)
    assert isinstance(make_windower(WindowConfig(), "time"), TimeWindower)
    assert isinstance(make_windower(WindowConfig()), CountWindower)
    assert isinstance(make_windower(WindowConfig(mode="count"), "session"), CountWindower)


def test_unknown_mode_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown window mode 'hourly'"):
        make_windower(WindowConfig(mode="hourly"))


def test_resolve_mode_refines_auto_from_a_sample() -> None:
    blk = [Record("f", 1, "x blk_1", "x", timestamp=1.0), Record("f", 2, "y", "y", timestamp=2.0)]
    plain = [Record("f", 1, "a", "a"), Record("f", 2, "b", "b")]
    assert resolve_mode(WindowConfig(), "count", blk) == "session"
    assert resolve_mode(WindowConfig(), "time", plain) == "count"
    assert resolve_mode(WindowConfig(), "time", blk[1:]) == "time"
    assert resolve_mode(WindowConfig(mode="count"), "session", blk) == "count"
    with pytest.raises(BadInput, match="--window time needs timestamps"):
        resolve_mode(WindowConfig(mode="time"), "count", plain)
