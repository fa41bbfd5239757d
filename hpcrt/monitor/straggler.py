"""Straggler scoring over one window: per-rank per-section medians from every rank in, scores and
verdicts out. Pure functions of the gathered summaries, so every rank computes the same report."""

from __future__ import annotations

import statistics
from typing import Dict, List

WORK = "work"
"""The built-in section: a step's time minus its time inside collectives (the rank's own work)."""
MAD_FLOOR = 0.01
"""The MAD used for z-scores is at least this fraction of the median (four equal ranks have MAD 0)."""


def summarize(sections: Dict[str, List[float]], collectives: Dict[str, List[float]],
              best: Dict[str, float]) -> dict:
    """This rank's contribution to a window: medians (seconds) of its section self-times and of its
    time inside each collective op, and its best earlier median per section (its own history)."""
    return {"sections": {name: statistics.median(v) for name, v in sections.items() if v},
            "collectives": {op: statistics.median(v) for op, v in collectives.items() if v},
            "best": dict(best)}


def score_window(summaries: List[dict], min_section_s: float) -> dict:
    """Scores of every rank and section, and the collectives' arrival analysis.

    relative = fastest rank's median / this rank's median; individual = this rank's best earlier
    median / its current one; z = (median - median over ranks) / (1.4826 MAD). A section is scored
    (counts for the verdict) when its fastest median is at least ``min_section_s``.
    """
    sections = sorted(set.intersection(*(set(s["sections"]) for s in summaries)))
    ranks: List[dict] = [{"rank": r, "sections": {}, "min_relative": 1.0, "worst_section": None}
                         for r in range(len(summaries))]
    for name in sections:
        medians = [s["sections"][name] for s in summaries]
        fastest, centre = min(medians), statistics.median(medians)
        mad = max(statistics.median(abs(m - centre) for m in medians), MAD_FLOOR * centre, 1e-9)
        scored = fastest >= min_section_s
        for r, median in enumerate(medians):
            best = summaries[r]["best"].get(name, median)
            entry = {"median_ms": median * 1e3, "relative": _ratio(fastest, median),
                     "individual": _ratio(min(best, median), median),
                     "z": (median - centre) / (1.4826 * mad), "scored": scored}
            ranks[r]["sections"][name] = entry
            if scored and entry["relative"] < ranks[r]["min_relative"]:
                ranks[r]["min_relative"], ranks[r]["worst_section"] = entry["relative"], name
    return {"ranks": ranks, "collectives": arrival_analysis(summaries)}


def arrival_analysis(summaries: List[dict]) -> Dict[str, dict]:
    """Split time inside each collective into "arrived late" and "slow inside" without comparing
    clocks: the last rank to arrive waits least, so the smallest median time inside is the
    collective's own duration; every other rank's excess is waiting, and a rank's lateness is how
    much less it waited than the rank that waited most (C4D's non-communication slow)."""
    ops = sorted(set.intersection(*(set(s["collectives"]) for s in summaries)))
    out = {}
    for op in ops:
        inside = [s["collectives"][op] for s in summaries]
        own = min(inside)
        waits = [t - own for t in inside]
        out[op] = {"inside_ms": own * 1e3, "wait_ms": [w * 1e3 for w in waits],
                   "late_ms": [(max(waits) - w) * 1e3 for w in waits]}
    return out


def _ratio(a: float, b: float) -> float:
    return 1.0 if b <= 0 else min(a / b, 1.0)


class StragglerTracker:
    """Counts, per rank, the windows in a row it scored below the threshold."""

    def __init__(self, threshold: float, consecutive: int):
        self.threshold = threshold
        self.consecutive = consecutive
        self.streak: Dict[int, int] = {}

    def update(self, scores: dict) -> List[dict]:
        """The stragglers of this window: ranks below the threshold for ``consecutive`` windows."""
        found = []
        for entry in scores["ranks"]:
            rank = entry["rank"]
            low = entry["min_relative"] < self.threshold
            self.streak[rank] = self.streak.get(rank, 0) + 1 if low else 0
            if self.streak[rank] >= self.consecutive:
                found.append({"rank": rank, "section": entry["worst_section"],
                              "score": entry["min_relative"], "windows": self.streak[rank]})
        return found
