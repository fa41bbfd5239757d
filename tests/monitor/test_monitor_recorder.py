"""The flight recorder, the core trace hook and the straggler scoring, without MPI processes."""

import numpy as np
import pytest

from hpcrt.core import trace_hook as trace
from hpcrt.monitor import recorder as recorder_module
from hpcrt.monitor.recorder import COLLECTIVE, RECORD_DTYPE, SECTION, FlightRecorder
from hpcrt.monitor.straggler import StragglerTracker, arrival_analysis, score_window, summarize


class FakeComm:
    """Stands for an mpi4py communicator: the recorder only needs its identity and members."""


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(recorder_module, "_world_ranks", lambda comm: [0, 1, 2, 3])
    rec = FlightRecorder(8)
    trace.set_recorder(rec)
    yield rec
    trace.set_recorder(None)


def test_hook_and_module_functions_are_no_ops_without_a_monitor():
    from hpcrt import monitor
    trace.set_recorder(None)
    token = trace.trace_collective("allreduce", FakeComm(), 8)
    assert token == -1
    trace.trace_done(token)
    with monitor.section("forward"):
        monitor.step()
    with pytest.raises(RuntimeError, match="not started"):
        monitor.on("hang", print)


def test_records_collectives_and_sections(recorder):
    comm, other = FakeComm(), FakeComm()
    section = recorder.enter(SECTION, "forward")
    first = trace.trace_collective("allreduce", comm, 64)
    trace.trace_done(first)
    blocked = trace.trace_collective("allgather", comm, 32)
    trace.trace_collective("bcast", other, 8)
    recorder.exit(section)
    records = recorder.records()
    assert [(r["op"], r["kind"], r["cseq"], r["state"]) for r in records] == [
        ("forward", "section", -1, "completed"), ("allreduce", "collective", 0, "completed"),
        ("allgather", "collective", 1, "entered"), ("bcast", "collective", 0, "entered")]
    # two communicators with the same members get distinct labels, the same on every rank
    assert [r["comm"] for r in records[1:]] == ["c%08x.0" % recorder.comm_labels[0]["key"]] * 2 + [
        "c%08x.1" % recorder.comm_labels[0]["key"]]
    assert [r[0] for r in recorder.in_flight()] == [blocked, blocked + 1]
    assert recorder.depth == 2 and list(recorder.progress) == [2, 0]  # what the sentinel would read
    trace.trace_done(blocked + 1)
    assert recorder.depth == 1
    assert recorder.counts_by_label() == {records[1]["comm"]: 2, records[3]["comm"]: 1}
    array = recorder.to_array()
    done = array[(array["kind"] == COLLECTIVE) & (array["t_exit"] > 0)]  # the allreduce and the bcast
    assert len(done) == 2 and recorder.coll_time == pytest.approx(float(np.sum(done["t_exit"] - done["t_enter"])))
    assert array.dtype == RECORD_DTYPE and list(array["op"]) == ["forward", "allreduce", "allgather", "bcast"]


def test_reused_section_blocks_nest_and_subtract_inner_collectives(recorder):
    from collections import defaultdict
    from types import SimpleNamespace

    from hpcrt.monitor.agent import Monitor
    host = SimpleNamespace(recorder=recorder, _sections=defaultdict(list), _section_blocks={})
    outer = Monitor.section(host, "layer")
    with outer:
        with Monitor.section(host, "layer") as inner:  # the same block, entered twice
            token = trace.trace_collective("allreduce", FakeComm(), 8)
            trace.trace_done(token)
    assert inner is outer and not outer._open
    records = recorder.records()
    assert [(r["op"], r["state"]) for r in records] == [
        ("layer", "completed"), ("layer", "completed"), ("allreduce", "completed")]
    durations = {r["seq"]: r["t_exit"] - r["t_enter"] for r in records}
    inner_self, outer_self = host._sections["layer"]  # the inner block ends first
    assert inner_self == pytest.approx(durations[records[1]["seq"]] - recorder.coll_time)
    assert outer_self == pytest.approx(durations[records[0]["seq"]] - recorder.coll_time)


def test_ring_keeps_the_newest_records(recorder):
    comm = FakeComm()
    for _ in range(20):
        trace.trace_done(trace.trace_collective("allreduce", comm, 8))
    records = recorder.records()
    assert recorder.capacity == 8 and [r["seq"] for r in records] == list(range(12, 20))
    assert records[-1]["cseq"] == 19 and all(r["kind"] == "collective" for r in records)
    assert recorder.rows[0][1] == COLLECTIVE


def _summary(work_ms, inside_ms, best=None):
    return summarize({"work": [work_ms / 1e3] * 5}, {"allreduce": [inside_ms / 1e3] * 5}, best or {})


def test_scores_name_the_slow_rank_and_separate_late_arrival():
    summaries = [_summary(10, 5.2), _summary(10.2, 5.0), _summary(15, 0.2), _summary(9.9, 5.1)]
    scores = score_window(summaries, min_section_s=1e-3)
    relative = [r["min_relative"] for r in scores["ranks"]]
    assert relative[2] == pytest.approx(9.9 / 15) and min(relative[:2] + relative[3:]) > 0.95
    assert scores["ranks"][2]["sections"]["work"]["z"] > 3
    late = scores["collectives"]["allreduce"]["late_ms"]
    assert int(np.argmax(late)) == 2 and late[2] == pytest.approx(5.0)
    assert scores["collectives"]["allreduce"]["inside_ms"] == pytest.approx(0.2)


def test_short_sections_are_not_scored_and_history_gives_the_individual_score():
    summaries = [_summary(0.1, 1), _summary(0.3, 1, best={"work": 0.15e-3})]
    scores = score_window(summaries, min_section_s=1e-3)
    assert all(r["min_relative"] == 1.0 for r in scores["ranks"])
    assert scores["ranks"][1]["sections"]["work"]["individual"] == pytest.approx(0.5)


def test_tracker_needs_consecutive_windows():
    tracker = StragglerTracker(threshold=0.75, consecutive=2)
    low = {"ranks": [{"rank": 0, "min_relative": 1.0, "worst_section": None},
                     {"rank": 1, "min_relative": 0.6, "worst_section": "work"}]}
    high = {"ranks": [{"rank": 0, "min_relative": 1.0, "worst_section": None},
                      {"rank": 1, "min_relative": 0.9, "worst_section": None}]}
    assert tracker.update(low) == [] and tracker.update(high) == [] and tracker.update(low) == []
    assert tracker.update(low) == [{"rank": 1, "section": "work", "score": 0.6, "windows": 2}]


def test_arrival_analysis_needs_no_common_clock():
    out = arrival_analysis([{"collectives": {"bcast": 3.0}}, {"collectives": {"bcast": 1.0}}])
    assert out["bcast"]["wait_ms"] == [2000.0, 0.0] and out["bcast"]["late_ms"] == [0.0, 2000.0]


def test_measure_recorder_overhead_figures_add_up_and_leave_the_callers_recorder_alone():
    from hpcrt.monitor import measure_recorder_overhead
    mine = FlightRecorder(8)
    trace.set_recorder(mine)
    try:
        figures = measure_recorder_overhead(records=2000, steps=3, step_ms=2.0, collectives_per_step=3,
                                            sections_per_step=2, repeats=1, rounds=2)
        assert trace._recorder is mine and mine.records() == []
    finally:
        trace.set_recorder(None)
    assert set(figures) == {"collective_record_s", "section_record_s", "untraced_hook_s", "python_call_s",
                            "step_s", "records_per_step", "estimated_step_overhead", "measured_step_overhead"}
    assert figures["records_per_step"] == 3 + 2
    per_step = 3 * figures["collective_record_s"] + 2 * figures["section_record_s"]
    assert figures["estimated_step_overhead"] == pytest.approx(per_step / figures["step_s"])
