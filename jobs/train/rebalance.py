"""``parallel.balance=monitor``: at the end of every ``rebalance_every`` steps, read each rank's
compute medians from the monitor's straggler window, let rank 0 decide new weights and broadcast
them (one collective), reshard from the next step, and log what was decided and why. A change
needs two windows in a row that each call for one (a single noisy window moves nothing); it
moves to the mean of their targets."""

from __future__ import annotations

import json
import logging
import statistics
from typing import Any, Optional

from hpcrt.monitor.diagnosis import describe_rebalance

from hpcrt.jobs.train.balance import COMPUTE, Rebalancer, compute_seconds, shard
from hpcrt.jobs.train.config import Parallel
from hpcrt.jobs.train.layout import Layout

log = logging.getLogger("hpcrt.jobs.train")


class OnlineBalance:
    """Rebalances ``layout`` from the ``monitor``'s windows; rank 0 writes each decision to the
    monitor's straggler log. Every rank holds the same state (rank 0 broadcasts it with each decision)."""

    def __init__(self, parallel: Parallel, layout: Layout, monitor: Any, comm: Any, batch: int, seq_len: int):
        self.every, self.layout, self.monitor, self.comm = parallel.rebalance_every, layout, monitor, comm
        self.rebalancer = Rebalancer(parallel.rebalance_threshold, parallel.rebalance_max_factor)
        self.batch, self.seq_len = batch, seq_len
        self.pending: Optional[dict] = None
        """The last window's proposal when it called for a change not yet made: ``{"step", "weights"}``."""
        self.changed_at: Optional[tuple[int, list]] = None
        """(step, the weights in force during it) of the last change."""

    def after_step(self, step: int) -> Optional[dict]:
        """At a rebalance step: the decision record when shares changed, the window named a straggler
        or it held no compute data (collective); None otherwise. New shares apply from step + 1.
        An error in rank 0's decision is raised on every rank."""
        window = self.monitor.last_window
        if step % self.every or window is None or window["steps"][1] != step:
            return None
        decided = self._decide_or_error(step, window) if self.comm.rank == 0 else None
        record, self.pending, error = self.comm.bcast(decided, root=0)
        if error is not None:
            raise RuntimeError(f"rebalance at step {step} failed on rank 0: {error}")
        if record is None:
            return None
        if record["changed"]:
            self.changed_at = (step, self.layout.weights)
            self.layout.reshard(record["weights"], self.batch, self.seq_len)
        if self.comm.rank == 0:
            with open(self.monitor.mdir.stragglers, "a") as f:
                f.write(json.dumps({"rebalance": record, "steps": window["steps"], "stragglers": []}) + "\n")
            log.warning("%s", _describe(record))
        return record

    def saved_state(self, step: int) -> dict:
        """What a checkpoint of ``step`` (taken after its decision) keeps: the weights in force during
        it, those in force from the next step (None: unchanged) and the proposal still pending."""
        changed_here = self.changed_at is not None and self.changed_at[0] == step
        return {"in_force": self.changed_at[1] if changed_here else self.layout.weights,
                "next": self.layout.weights if changed_here else None, "pending": self.pending}

    def resume(self, saved: Optional[dict]) -> None:
        """Put a checkpoint's :meth:`saved_state` back (it is ignored when saved on another rank count):
        the weights in force from the step after it and the pending proposal."""
        weights = saved and (saved.get("next") or saved.get("in_force"))
        if not weights or len(weights) != self.comm.size:
            return
        self.layout.reshard(weights, self.batch, self.seq_len)
        self.pending = saved.get("pending")

    def _decide_or_error(self, step: int, window: dict) -> tuple[Optional[dict], Optional[dict], Optional[str]]:
        """Rank 0: (record, pending proposal, None), or (None, None, what went wrong) so that every
        rank raises it rather than wait in the broadcast."""
        try:
            return (*self._decide(step, window), None)
        except Exception as error:  # any failure: the other ranks wait for this decision
            return None, None, f"{type(error).__name__}: {error}"

    def _decide(self, step: int, window: dict) -> tuple[Optional[dict], Optional[dict]]:
        """Rank 0: the record of the window's decision — new weights from its compute medians (a
        change only when it moves some rank's whole sequences or tokens), who was slow where — and
        the proposal left pending."""
        old = self.layout.shards
        missing = [rank for rank, entry in enumerate(window["ranks"]) if COMPUTE not in entry["sections"]]
        if missing:
            return {"step": step, "window": window["window"], "changed": False, "no_compute_data": missing,
                    "shares": old.per_rank(), "weights": self.layout.weights}, None
        compute = compute_seconds(window)
        proposal = self.rebalancer.propose(old, compute)
        previous = self.pending["weights"] if self.pending and self.pending["step"] == step - self.every else None
        confirmed = proposal is not None and previous is not None
        weights = [(a + b) / 2 for a, b in zip(proposal, previous)] if confirmed else None
        pending = None if confirmed or proposal is None else {"step": step, "weights": proposal}
        new = old if weights is None else shard(weights, self.layout.table, self.batch, self.seq_len)
        changed = new != old
        slow = [s["rank"] for s in window.get("stragglers", [])]
        if not changed and not slow:
            return None, pending
        speeds = [w / max(c, 1e-12) for w, c in zip(old.work(), compute)]
        computing = statistics.median(compute) * (1.0 + self.rebalancer.threshold)
        return {"step": step, "window": window["window"], "applies_from": step + 1, "changed": changed,
                "compute_ms": [c * 1e3 for c in compute], "slowdown": [max(speeds) / v for v in speeds],
                "old_shares": old.per_rank(), "shares": new.per_rank(),
                "weights": weights if changed else self.layout.weights,
                "reported_not_rebalanced": [] if changed else [r for r in slow if compute[r] <= computing],
                "held": [] if changed else [r for r in slow if compute[r] > computing],
                "stragglers": [{"rank": s["rank"], "section": s["section"]} for s in window.get("stragglers", [])]
                }, pending


def _describe(record: dict) -> str:
    """The log line of a decision; for a window without compute data, which ranks had none."""
    if "no_compute_data" not in record:
        return describe_rebalance(record)
    return (f"rebalance at step {record['step']}: no change; ranks {record['no_compute_data']} recorded no "
            f"'{COMPUTE}' section in the window, so shares stay {record['shares']} and the next change again "
            "needs two windows in a row")
