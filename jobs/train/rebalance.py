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

from hpcrt.jobs.train.balance import Rebalancer, compute_seconds, shard
from hpcrt.jobs.train.config import Parallel
from hpcrt.jobs.train.layout import Layout

log = logging.getLogger("hpcrt.jobs.train")


class OnlineBalance:
    """Rebalances ``layout`` from the ``monitor``'s windows; rank 0 writes each decision to the
    monitor's straggler log."""

    def __init__(self, parallel: Parallel, layout: Layout, monitor: Any, comm: Any, batch: int, seq_len: int):
        self.every, self.layout, self.monitor, self.comm = parallel.rebalance_every, layout, monitor, comm
        self.rebalancer = Rebalancer(parallel.rebalance_threshold, parallel.rebalance_max_factor)
        self.batch, self.seq_len = batch, seq_len
        self.pending: Optional[list] = None
        """Rank 0: the previous window's proposal, when it called for a change that was not made."""

    def after_step(self, step: int) -> Optional[dict]:
        """At a rebalance step: the decision record when shares changed or the window named a
        straggler (collective); None otherwise. New shares apply from step + 1."""
        window = self.monitor.last_window
        if step % self.every or window is None or window["steps"][1] != step:
            return None
        record = self._decide(step, window) if self.comm.rank == 0 else None
        record = self.comm.bcast(record, root=0)
        if record is None:
            return None
        if record["changed"]:
            self.layout.reshard(record["weights"], self.batch, self.seq_len)
        if self.comm.rank == 0:
            with open(self.monitor.mdir.stragglers, "a") as f:
                f.write(json.dumps({"rebalance": record, "steps": window["steps"], "stragglers": []}) + "\n")
            log.warning("%s", describe_rebalance(record))
        return record

    def _decide(self, step: int, window: dict) -> Optional[dict]:
        """Rank 0: the new weights from the window's compute medians (a change only when it moves
        some rank's whole sequences or tokens), with who was slow where."""
        compute = compute_seconds(window)
        old = self.layout.shards
        proposal = self.rebalancer.propose(old, compute)
        confirmed = proposal is not None and self.pending is not None
        weights = [(a + b) / 2 for a, b in zip(proposal, self.pending)] if confirmed else None
        self.pending = None if confirmed else proposal
        new = old if weights is None else shard(weights, self.layout.table, self.batch, self.seq_len)
        changed = new != old
        slow = [s["rank"] for s in window.get("stragglers", [])]
        if not changed and not slow:
            return None
        speeds = [w / max(c, 1e-12) for w, c in zip(old.work(), compute)]
        computing = statistics.median(compute) * (1.0 + self.rebalancer.threshold)
        return {"step": step, "window": window["window"], "applies_from": step + 1, "changed": changed,
                "compute_ms": [c * 1e3 for c in compute], "slowdown": [max(speeds) / v for v in speeds],
                "old_shares": old.per_rank(), "shares": new.per_rank(),
                "weights": weights if changed else self.layout.weights,
                "reported_not_rebalanced": [] if changed else [r for r in slow if compute[r] <= computing],
                "held": [] if changed else [r for r in slow if compute[r] > computing],
                "stragglers": [{"rank": s["rank"], "section": s["section"]} for s in window.get("stragglers", [])]}
