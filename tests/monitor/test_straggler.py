"""Straggler scoring against numpy: samples whose median, mean and maximum all differ, so an
estimator other than the median, or a centre or spread other than the documented ones, fails."""

import numpy as np
import pytest

from hpcrt.monitor.straggler import MAD_FLOOR, StragglerTracker, score_window, summarize

SKEWED_MS = [3.0, 1.0, 40.0, 2.0, 4.0]
"""Median 3 ms, mean 10 ms, maximum 40 ms."""


def _reference_entries(medians_s: list, min_section_s: float, best_s: list) -> list:
    """The documented per-rank entries of one section, from numpy."""
    medians = np.array(medians_s)
    centre = np.median(medians)
    mad = max(np.median(np.abs(medians - centre)), MAD_FLOOR * centre, 1e-9)
    fastest = medians.min()
    return [{"median_ms": m * 1e3, "relative": fastest / m, "individual": min(b, m) / m,
             "z": (m - centre) / (1.4826 * mad), "scored": bool(fastest >= min_section_s)}
            for m, b in zip(medians, best_s)]


def test_summary_takes_the_median_of_each_section_and_collective():
    samples = [ms / 1e3 for ms in SKEWED_MS]
    summary = summarize({"work": samples, "io": samples[:4], "idle": []}, {"allreduce": samples[::-1]},
                        {"work": 0.5e-3})
    assert summary == {"sections": {"work": pytest.approx(np.median(samples)),
                                    "io": pytest.approx(np.median(samples[:4]))},
                       "collectives": {"allreduce": pytest.approx(np.median(samples))},
                       "best": {"work": 0.5e-3}}
    assert summary["sections"]["work"] == pytest.approx(3e-3)  # not the mean (10 ms) nor the max (40 ms)


def test_scores_use_the_median_over_ranks_and_its_absolute_deviation():
    # Rank medians 10, 11, 12, 13, 40 ms: centre 12 (the mean is 17.2), MAD 1 ms (the std is ~11.6).
    work = [10e-3, 11e-3, 12e-3, 13e-3, 40e-3]
    best = [9e-3, 20e-3, 12e-3, 6.5e-3, 40e-3]
    summaries = [summarize({"work": [w] * 3, "io": [2e-3 + r * 1e-3] * 3, **({"x": [1.0]} if r else {})}, {},
                           {"work": b}) for r, (w, b) in enumerate(zip(work, best))]
    scores = score_window(summaries, min_section_s=2e-3)  # io's fastest is exactly 2 ms: scored
    io = [2e-3 + r * 1e-3 for r in range(5)]
    for name, medians, bests in (("work", work, best), ("io", io, io)):
        expected = _reference_entries(medians, 2e-3, bests)
        got = [rank["sections"][name] for rank in scores["ranks"]]
        assert got == [pytest.approx(e) for e in expected], name
    assert [set(rank["sections"]) for rank in scores["ranks"]] == [{"io", "work"}] * 5  # "x" is not on rank 0
    assert scores["ranks"][4]["sections"]["work"]["z"] == pytest.approx(28 / 1.4826)
    worst = [(rank["rank"], rank["worst_section"], rank["min_relative"]) for rank in scores["ranks"]]
    assert worst == [(0, None, 1.0), (1, "io", pytest.approx(2 / 3)), (2, "io", pytest.approx(2 / 4)),
                     (3, "io", pytest.approx(2 / 5)), (4, "work", pytest.approx(10 / 40))]


def test_equal_ranks_use_the_mad_floor_and_ties_keep_the_first_section():
    medians = [10e-3, 10e-3, 10e-3, 10.5e-3]  # MAD 0: the floor, 1 % of the centre, scales the z-scores
    summaries = [summarize({"a": [m], "b": [m]}, {}, {}) for m in medians]
    scores = score_window(summaries, min_section_s=1e-3)
    assert scores["ranks"][3]["sections"]["a"]["z"] == pytest.approx(0.5e-3 / (1.4826 * MAD_FLOOR * 10e-3))
    assert scores["ranks"][3]["worst_section"] == "a"  # "b" is as slow, not slower


def test_short_and_zero_sections_are_not_scored_and_a_zero_median_is_not_slow():
    summaries = [summarize({"tiny": [0.0], "work": [5e-3], "empty": [0.0]}, {}, {}),
                 summarize({"tiny": [1e-4], "work": [5e-3], "empty": [0.0]}, {}, {})]
    scores = score_window(summaries, min_section_s=5e-3 + 1e-12)
    assert [r["sections"]["tiny"]["relative"] for r in scores["ranks"]] == [1.0, 0.0]
    assert [(r["sections"]["empty"]["relative"], r["sections"]["empty"]["z"]) for r in scores["ranks"]] == [
        (1.0, 0.0)] * 2  # all zero: no division by a zero MAD
    assert not any(s["scored"] for r in scores["ranks"] for s in r["sections"].values())
    assert [r["min_relative"] for r in scores["ranks"]] == [1.0, 1.0]


def test_a_rank_exactly_at_the_threshold_is_not_a_straggler():
    tracker = StragglerTracker(threshold=0.75, consecutive=1)
    window = {"ranks": [{"rank": 0, "min_relative": 0.75, "worst_section": "work"},
                        {"rank": 1, "min_relative": 0.74, "worst_section": "work"}]}
    assert tracker.update(window) == [{"rank": 1, "section": "work", "score": 0.74, "windows": 1}]
