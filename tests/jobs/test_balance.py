"""Speed-weighted shards: whole-item shares of any weights, the rebalance's hysteresis, and the
training job with ``parallel.balance=monitor`` on real MPI ranks — a rank slowed in its compute
gets a smaller share, a clean run keeps equal shares, a rank slow outside compute is only
reported, a resume keeps the shares in force and the pending proposal — each against a single-rank
run's parameters — and a failed decision on rank 0 raises on every rank instead of hanging them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hpcrt.jobs.train.balance import Rebalancer, Shards, apportion, shard
from hpcrt.jobs.train.config import Parallel
from hpcrt.jobs.train.layout import Layout
from hpcrt.jobs.train.rebalance import OnlineBalance
from test_train_job import RTOL, _saved_params, _summary, _train

# Big enough that a step's compute (milliseconds) dwarfs sleep's granularity; float64 to compare exactly.
MODEL = ["model.vocab=16", "model.d_model=32", "model.d_k=8", "model.d_v=8", "model.d_ff=64", "model.dtype=float64",
         "train.batch=8", "train.seq_len=48", "train.log_every=1000", "checkpoint.every=0"]
MONITOR = ["parallel.balance=monitor", "monitor.report_every=5", "parallel.rebalance_every=5",
           "monitor.heartbeat_timeout_s=60"]
STEADY = [*(arg for arg in MODEL if not arg.startswith(("model.d_model", "model.d_ff"))), "model.d_model=64",
          "model.d_ff=256", "parallel.sp=2", *(arg.replace("=5", "=10") for arg in MONITOR)]
"""Windows of 10 steps of a 4x larger model, each sequence split over 2 ranks (shares of single
tokens: any rebalance shows), for the tests that no share moves: what they stand against is a busy
machine's scheduling noise, and a rank that only arrives late at the All-Scan."""


def _rows(tmp_path: Path, run: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]


def _rebalances(tmp_path: Path, run: str) -> list[dict]:
    lines = (tmp_path / run / "monitor" / "stragglers.jsonl").read_text().splitlines()
    return [report["rebalance"] for report in map(json.loads, lines) if "rebalance" in report]


def _shares_by_step(rows: list[dict]) -> dict:
    """The shares in force at each step (a row carries them when they change)."""
    found, current = {}, None
    for row in rows:
        current = row.get("shares", current)
        found[row["step"]] = current
    return found


def test_apportion_gives_whole_items_in_proportion_at_least_one_each():
    assert apportion(9, [1, 3, 2, 5]) == [1, 2, 2, 4]
    assert apportion(8, [2, 1, 1]) == [4, 2, 2]
    assert apportion(7, [1, 1, 1]) == [3, 2, 2]  # the even split: the first ones one longer
    assert apportion(4, [1000, 1, 1, 1]) == [1, 1, 1, 1]  # nobody gets none
    with pytest.raises(ValueError):
        apportion(2, [1, 1, 1])


def test_shard_splits_sequences_by_group_weight_and_tokens_by_rank_weight():
    table = [{"rank": r, "dp": r // 2, "sp": r % 2} for r in range(4)]
    got = shard([1.0, 3.0, 2.0, 2.0], table, batch=8, seq_len=12)
    assert got.rows == ((0, 4), (0, 4), (4, 8), (4, 8))  # groups weigh 4 and 4
    assert got.tokens == ((0, 3), (3, 12), (0, 6), (6, 12))


def test_rebalancer_keeps_shares_inside_the_threshold_and_bounds_each_change():
    rebalancer = Rebalancer(threshold=0.25, max_factor=2.0)
    even = Shards(((0, 4), (4, 8)), ((0, 12), (0, 12)))
    assert rebalancer.propose(even, [1.0, 1.2]) is None  # 20 % noise: no change
    new = rebalancer.propose(even, [1.0, 2.0])
    assert new == pytest.approx([2 / 3, 1 / 3])  # half the speed, half the share
    capped = rebalancer.propose(even, [1.0, 10.0])
    assert capped == pytest.approx([0.75, 0.25])  # a tenth the speed: halved only
    uneven = Shards(((0, 6), (6, 8)), ((0, 12), (0, 12)))  # weights drifted: it starts from the shares
    assert rebalancer.propose(uneven, [3.0, 3.0]) is None  # balanced: equal compute times


def test_a_rank_slowed_in_compute_gets_a_smaller_share_and_diagnose_says_so(launch, tmp_path):
    done = _train(launch, tmp_path, "slow", 2, *MODEL, *MONITOR, "train.steps=20",
                  env={"HPCRT_FAULT": "slow:rank=1,factor=3"})
    assert done.returncode == 0, done.stderr[-3000:]
    shares = _shares_by_step(_rows(tmp_path, "slow"))
    assert shares[1] == [[4, 48], [4, 48]]
    rows_of = {step: [rank[0] for rank in value] for step, value in shares.items()}
    assert rows_of[16][1] < rows_of[16][0], shares  # within 3 windows of 5 steps
    changes = [r for r in _rebalances(tmp_path, "slow") if r["changed"]]
    assert changes and all(max(range(2), key=lambda r: c["slowdown"][r]) == 1 for c in changes), changes
    report = launch(["-m", "hpcrt", "diagnose", str(tmp_path / "slow")], timeout=60)
    assert "rebalance at step 10: rank 1 computed" in report.stdout, report.stdout  # two windows in a row
    single = _train(launch, tmp_path, "one", 1, *MODEL, "train.steps=20", "checkpoint.every=0")
    assert single.returncode == 0, single.stderr[-3000:]
    np.testing.assert_allclose(_saved_params(tmp_path, "slow"), _saved_params(tmp_path, "one"), rtol=RTOL,
                               atol=1e-12)


def test_a_clean_run_keeps_equal_shares(launch, tmp_path):
    done = _train(launch, tmp_path, "clean", 2, *STEADY, "train.steps=60")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path, "clean")
    assert [row["step"] for row in rows if "shares" in row] == [1]
    assert not [r for r in _rebalances(tmp_path, "clean") if r["changed"]]


def test_a_rank_slow_outside_compute_is_reported_not_rebalanced(launch, tmp_path):
    done = _train(launch, tmp_path, "late", 2, *STEADY, "train.steps=40",
                  env={"HPCRT_FAULT": "delay:rank=1,step=0,ms=60"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["step"] for row in _rows(tmp_path, "late") if "shares" in row] == [1]  # [[8, 24], [8, 24]]
    records = _rebalances(tmp_path, "late")
    assert records and all(not r["changed"] and r["reported_not_rebalanced"] == [1] for r in records), records


def test_balance_monitor_without_the_monitor_is_one_config_error(launch, tmp_path):
    done = _train(launch, tmp_path, "bad", 2, "parallel.balance=monitor", "train.monitor=false", timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    message = "train config key 'parallel.balance': monitor needs train.monitor=true"
    assert done.stderr.count(message) == 1 and "train.monitor=false" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _shares_from(tmp_path: Path, run: str, step: int) -> list:
    """The shares step ``step`` ran with by the decisions on record: the last change before it, else
    the first row's."""
    changes = [r for r in _rebalances(tmp_path, run) if r["changed"] and r["applies_from"] <= step]
    return changes[-1]["shares"] if changes else _rows(tmp_path, run)[0]["shares"]


def test_a_resume_after_a_rebalance_keeps_the_shares_in_force(launch, tmp_path):
    slow = {"HPCRT_FAULT": "slow:rank=1,factor=3"}
    common = [*MODEL, *MONITOR, "checkpoint.every=10"]
    whole = _train(launch, tmp_path, "whole", 2, *common, "train.steps=25", env=slow)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = _train(launch, tmp_path, "split", 2, *common, "train.steps=15", env=slow)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _shares_from(tmp_path, "split", 16) != [[4, 48], [4, 48]], "no rebalance before the checkpoint"
    in_force = _shares_from(tmp_path, "split", 16)  # with one decided at step 15, after the save's step
    again = _train(launch, tmp_path, "split", 2, *common, "train.steps=25", env=slow)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _summary(tmp_path, "split")["resumed_from"] == 15
    assert _shares_by_step(_rows(tmp_path, "split"))[16] == in_force
    np.testing.assert_allclose(_saved_params(tmp_path, "split"), _saved_params(tmp_path, "whole"), rtol=RTOL,
                               atol=1e-12)


def test_a_resume_keeps_the_pending_proposal_and_the_shares_decided_at_the_saved_step(launch, tmp_path):
    slow = {"HPCRT_FAULT": "slow:rank=1,factor=3"}
    common = [*MODEL, *MONITOR, "checkpoint.every=0"]
    first = _train(launch, tmp_path, "run", 2, *common, "train.steps=5", env=slow)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not [r for r in _rebalances(tmp_path, "run") if r["changed"]], "window 1 alone changed shares"
    second = _train(launch, tmp_path, "run", 2, *common, "train.steps=10", env=slow)
    assert second.returncode == 0, second.stderr[-3000:]
    decided = [r["step"] for r in _rebalances(tmp_path, "run") if r["changed"]]
    assert decided == [10], "window 1's proposal, saved at step 5, was not confirmed by window 2"
    third = _train(launch, tmp_path, "run", 2, *common, "train.steps=12", env=slow)
    assert third.returncode == 0, third.stderr[-3000:]
    rows = _shares_by_step(_rows(tmp_path, "run"))
    assert rows[11] == _shares_from(tmp_path, "run", 11) != rows[10], rows  # decided at 10, saved with step 10
    single = _train(launch, tmp_path, "one", 1, *MODEL, "train.steps=12")
    assert single.returncode == 0, single.stderr[-3000:]
    np.testing.assert_allclose(_saved_params(tmp_path, "run"), _saved_params(tmp_path, "one"), rtol=RTOL,
                               atol=1e-12)


def _online(comm, tmp_path: Path, window: dict) -> OnlineBalance:
    """Rebalancing 2 ranks (dp=2) of a batch of 8 from ``window``, as the job's monitor would hand it."""
    parallel = Parallel(dp=2, sp=1, scan="auto", zero="none", allreduce="auto", balance="monitor", weights=None,
                        gpu_weight=4.0, rebalance_every=5, rebalance_threshold=0.25, rebalance_max_factor=2.0)
    table = [{"rank": r, "dp": r, "sp": 0} for r in range(2)]
    layout = Layout(None, comm.rank, (0, 0), (0, 0), table, Shards((), ()), [])
    layout.reshard([1.0, 1.0], 8, 48)
    monitor = SimpleNamespace(last_window=window, mdir=SimpleNamespace(stragglers=tmp_path / "stragglers.jsonl"))
    return OnlineBalance(parallel, layout, monitor, comm, batch=8, seq_len=48)


def _window(*sections: dict) -> dict:
    return {"window": 1, "steps": [1, 5], "ranks": [{"sections": s} for s in sections], "stragglers": []}


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_a_window_without_compute_data_keeps_the_shares_on_every_rank_and_says_why(comm, tmp_path, caplog):
    online = _online(comm, tmp_path, _window({"compute": {"median_ms": 1.0}}, {"work": {"median_ms": 1.0}}))
    online.pending = {"step": 0, "weights": [0.6, 0.4]}
    record = online.after_step(5)
    assert record["changed"] is False and record["no_compute_data"] == [1], record
    assert online.layout.shards.per_rank() == [[4, 48], [4, 48]] and online.pending is None
    if comm.rank == 0:
        assert "ranks [1] recorded no 'compute' section" in caplog.text, caplog.text


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_a_decision_failing_on_rank_0_raises_the_same_error_on_every_rank(comm, tmp_path):
    online = _online(comm, tmp_path, _window({"compute": {"median_ms": "1.0"}}, {"compute": {"median_ms": 1.0}}))
    with pytest.raises(RuntimeError, match="rebalance at step 5 failed on rank 0: TypeError"):
        online.after_step(5)
