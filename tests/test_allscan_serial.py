"""All-Scan pieces that need no MPI job: the op algebra, the state layout and the cost model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcrt import LinkCost, to_fake_gpu
from hpcrt.collectives import ScanOp, best_blocks, choose_allscan, flipped, predict_allscan
from hpcrt.collectives._src.scanlayout import ScanLayout, assign, complete
from hpcrt.collectives._src.scanops import AFFINE, resolve_op

LINK = LinkCost(alpha=2e-6, beta=1 / 25e9)


def test_affine_composes_maps_in_rank_order_and_is_associative():
    rng = np.random.default_rng(0)
    x1, x2, x3 = [(rng.uniform(0.5, 1.5, (4, 1)), rng.standard_normal((4, 3))) for _ in range(3)]
    y = rng.standard_normal((4, 3))
    a, b = AFFINE.combine(x1, x2)  # apply x1, then x2
    assert np.allclose(a * y + b, x2[0] * (x1[0] * y + x1[1]) + x2[1])
    left = AFFINE.combine(AFFINE.combine(x1, x2), x3)
    right = AFFINE.combine(x1, AFFINE.combine(x2, x3))
    assert all(np.allclose(p, q) for p, q in zip(left, right))
    other_order = AFFINE.combine(x2, x1)
    assert not np.allclose(other_order[1], b)  # not commutative
    assert all(np.allclose(p, q) for p, q in zip(flipped(AFFINE).combine(x2, x1), (a, b)))


def test_identities_leave_operands_unchanged():
    rng = np.random.default_rng(1)
    pair = (rng.uniform(size=(5, 1)), rng.standard_normal((5, 2)))
    assert all(np.array_equal(p, q) for p, q in zip(AFFINE.combine(AFFINE.identity(pair), pair), pair))
    ints = np.array([[3, -7]], dtype=np.int32)
    op = resolve_op("max")
    assert np.array_equal(op.combine(op.identity(ints), ints), ints)
    assert op.identity(to_fake_gpu(np.zeros(3))).get()[0] == -np.inf


def test_resolving_ops_and_checking_operands():
    assert resolve_op("affine") is AFFINE
    user = ScanOp(lambda lo, hi: lo @ hi, np.eye, "matmul")
    assert resolve_op(user) is user
    with pytest.raises(ValueError, match="unknown op"):
        resolve_op("min")
    with pytest.raises(TypeError, match="op must be"):
        resolve_op(42)
    with pytest.raises(TypeError, match="takes a pair"):
        AFFINE.check(np.ones(3))
    with pytest.raises(TypeError, match="broadcastable"):
        AFFINE.check((np.ones((3, 2)), np.ones((3, 1))))
    with pytest.raises(TypeError, match="takes one array"):
        resolve_op("sum").check((np.ones(2), np.ones(2)))


def test_layout_splits_rows_keeps_broadcast_arrays_whole_and_packs_aligned():
    parts = (np.arange(2, dtype=np.float32) + 1, np.arange(20, dtype=np.float64).reshape(10, 2),
             np.arange(10, dtype=np.int8).reshape(10, 1))
    layout = ScanLayout.of(parts, rowwise=True)
    assert layout.rows == 10 and layout.row_split == (False, True, True)
    assert layout.nbytes == 8 + 160 + 10
    bounds = layout.bounds(3)
    assert bounds == [(0, 4), (4, 7), (7, 10)]
    assert sum(layout.message_nbytes(lo, hi, k == 0) for k, (lo, hi) in enumerate(bounds)) == layout.nbytes
    shared = ()
    for k, (lo, hi) in enumerate(bounds):
        message = layout.message(np, lo, hi, k == 0)
        views = layout.views(message, lo, hi, k == 0)
        assert all(v is None or v.flags.aligned for v in views)
        assign(views, layout.block(parts, lo, hi, k == 0))
        shared = shared or views
        unpacked = complete(layout.views(message, lo, hi, k == 0), shared)
        assert all(np.array_equal(u, p) for u, p in zip(unpacked, layout.block(parts, lo, hi)))
    assert ScanLayout.of(parts[1:], rowwise=False).row_split == (False, False)


def test_cost_formulas():
    n, p = 1 << 20, 8
    alpha, beta = LINK.alpha, LINK.beta
    assert predict_allscan("ring", n, p, LINK) == pytest.approx(7 * (alpha + n * beta))
    assert predict_allscan("mpi", n, p, LINK) == pytest.approx(3 * (alpha + n * beta))
    assert predict_allscan("allgather", n, 5, LINK) == pytest.approx(3 * alpha + 4 * n * beta)
    assert predict_allscan("pipeline", n, p, LINK, blocks=4) == pytest.approx((7 + 4) * (alpha + n * beta / 4))
    assert predict_allscan("pipeline", n, 1, LINK) == 0.0
    with pytest.raises(ValueError, match="unknown All-Scan algorithm"):
        predict_allscan("tree", n, p, LINK)


def test_block_count_is_the_model_optimum_clamped_to_the_rows():
    n, p = 1 << 20, 8
    k_star = math.sqrt((p - 1) * n * LINK.beta / LINK.alpha)
    k = best_blocks(n, p, LINK)
    assert k in (math.floor(k_star), math.ceil(k_star))
    assert predict_allscan("pipeline", n, p, LINK, k) <= min(
        predict_allscan("pipeline", n, p, LINK, j) for j in range(1, 200))
    assert best_blocks(n, p, LINK, max_blocks=3) == 3
    assert best_blocks(n, p, LINK, max_blocks=0) == 1
    assert best_blocks(0, p, LINK) == 1 and best_blocks(n, 1, LINK) == 1
    assert best_blocks(n, p, LinkCost(0.0, LINK.beta), max_blocks=64) == 64


def test_auto_choice_follows_the_model():
    # Large state over many ranks: the pipeline; a tiny state: MPI's log-p rounds; one rank: free.
    assert choose_allscan(64 << 20, 64, LINK, max_blocks=4096)[0] == "pipeline"
    assert choose_allscan(64, 64, LINK, max_blocks=1) == ("mpi", 1)
    assert choose_allscan(1 << 20, 1, LINK) == ("pipeline", 1)
    assert choose_allscan(64 << 20, 64, LINK, blocks=512) == ("pipeline", 512)
    assert choose_allscan(64 << 20, 64, LINK, blocks=8)[0] == "mpi"  # too few blocks to pay off
