"""All-Scan pieces that need no MPI job: the op algebra, the state layout and the cost model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcrt import LinkCost, to_fake_gpu
from hpcrt.collectives import ScanLinks, ScanOp, best_blocks, flipped, predict_allscan
from hpcrt.collectives.allscan.layout import ScanLayout, assign, complete
from hpcrt.collectives.allscan.ops import AFFINE, resolve_op
from hpcrt.collectives.costmodel.allscan import MPI_ROUND_SPLIT, auto_choice

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


def test_layouts_are_remembered_per_shapes_dtypes_and_rowwise_and_errors_are_not():
    a, b = np.ones((4, 2), np.float32), np.ones(2, np.float64)
    assert ScanLayout.of((a, b), True) is ScanLayout.of((a.copy(), b.copy()), True)
    assert ScanLayout.of((a, b), False).rows == 1 and ScanLayout.of((a, b), True).rows == 4
    swapped = ScanLayout.of((a.astype(">f4"), b), True)
    assert swapped.dtypes[0] == np.dtype(">f4") and swapped is not ScanLayout.of((a, b), True)
    for _ in range(2):  # a failed layout is not remembered: the second call raises again
        with pytest.raises(TypeError, match="broadcast together"):
            ScanLayout.of((np.ones((3, 2)), np.ones((4, 2))), True)


def test_message_slots_hold_every_block_apart_and_aligned():
    # a row-split float32 column, a row-split float64 matrix and a shared int16 row (block 0 only)
    parts = (np.arange(10, dtype=np.float32)[:, None], np.arange(30.0).reshape(10, 3),
             np.arange(3, dtype=np.int16))
    layout = ScanLayout.of(parts, True)
    bounds = layout.bounds(4)
    slots = layout.message_slots(bounds)
    assert [stop - start for start, stop in slots] == [layout.message_nbytes(lo, hi, k == 0)
                                                       for k, (lo, hi) in enumerate(bounds)]
    assert slots[0][1] - slots[0][0] > slots[1][1] - slots[1][0]  # block 0 also carries the shared row
    assert all(start % 8 == 0 for start, _ in slots)
    assert all(stop <= nxt for (_, stop), (nxt, _) in zip(slots, slots[1:]))
    buffer = np.zeros(slots[-1][1], dtype=np.uint8)  # every block through its slot and back
    for k, ((lo, hi), (start, stop)) in enumerate(zip(bounds, slots)):
        assign(layout.views(buffer[start:stop], lo, hi, k == 0), layout.block(parts, lo, hi, k == 0))
    for k, ((lo, hi), (start, stop)) in enumerate(zip(bounds, slots)):
        views = layout.views(buffer[start:stop], lo, hi, k == 0)
        assert all(v.flags.aligned for v in views if v is not None)
        assert np.array_equal(views[0], parts[0][lo:hi]) and np.array_equal(views[1], parts[1][lo:hi])
        assert np.array_equal(views[2], parts[2]) if k == 0 else views[2] is None
    empty = ScanLayout.of((np.ones((0, 2)),), True)
    assert empty.message_slots(empty.bounds(1)) == [(0, 0)]


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
        message = np.empty(layout.message_nbytes(lo, hi, k == 0), dtype=np.uint8)
        views = layout.views(message, lo, hi, k == 0)
        assert all(v is None or v.flags.aligned for v in views)
        assign(views, layout.block(parts, lo, hi, k == 0))
        shared = shared or views
        unpacked = complete(layout.views(message, lo, hi, k == 0), shared)
        assert all(np.array_equal(u, p) for u, p in zip(unpacked, layout.block(parts, lo, hi)))
    assert ScanLayout.of(parts[1:], rowwise=False).row_split == (False, False)


def test_message_buffers_are_reused_after_they_are_given_back():
    from hpcrt.collectives.comm.msgpool import Borrowed
    first = Borrowed(np)
    a, b = first.take(1000), first.take(0)
    assert (a.nbytes, b.nbytes, a.dtype) == (1000, 0, np.uint8)
    second = Borrowed(np)
    c = second.take(1000)
    assert not np.shares_memory(a, c)  # a is still out: the pool hands out another buffer
    first.give_back()
    third = Borrowed(np)
    assert np.shares_memory(third.take(600), a)  # same size class (1 KiB), back in the pool
    second.give_back()
    third.give_back()


def test_cost_formulas():
    n, p = 1 << 20, 8
    alpha, beta = LINK.alpha, LINK.beta
    assert predict_allscan("ring", n, p, LINK) == pytest.approx(7 * (alpha + n * beta))
    assert predict_allscan("mpi", n, p, LINK) == pytest.approx(3 * (alpha + n * beta))
    assert predict_allscan("allgather", n, 5, LINK) == pytest.approx(3 * alpha + 4 * n * beta)
    # the first block takes p−1 hops, each of the K−1 others one step more: (p−2+K) steps
    assert predict_allscan("pipeline", n, p, LINK, blocks=4) == pytest.approx((6 + 4) * (alpha + n * beta / 4))
    assert predict_allscan("pipeline", n, p, LINK, blocks=1) == predict_allscan("ring", n, p, LINK)
    assert predict_allscan("pipeline", n, 1, LINK) == 0.0
    with pytest.raises(ValueError, match="unknown All-Scan algorithm"):
        predict_allscan("tree", n, p, LINK)


CHAIN = LinkCost(alpha=30e-6, beta=1 / 0.7e9)
SHIFT = LinkCost(alpha=100e-6, beta=1 / 0.2e9)
BUSY = ScanLinks(chain=CHAIN, shift=SHIFT)
"""4 ranks on 2 cores as measured here: a round with every rank sending costs far more than a hop."""


def test_cost_formulas_charge_chain_hops_and_shift_rounds_apart():
    n, p = 1 << 20, 4
    hop, rnd = CHAIN.alpha + n * CHAIN.beta, SHIFT.alpha + n * SHIFT.beta
    assert predict_allscan("ring", n, p, BUSY) == pytest.approx(3 * hop)
    assert predict_allscan("mpi", n, p, BUSY) == pytest.approx(2 * rnd)
    assert predict_allscan("allgather", n, p, BUSY) == pytest.approx(2 * SHIFT.alpha + 3 * n * SHIFT.beta)
    first_block = 3 * (CHAIN.alpha + n / 5 * CHAIN.beta)
    later_blocks = 4 * (SHIFT.alpha + n / 5 * SHIFT.beta)
    assert predict_allscan("pipeline", n, p, BUSY, blocks=5) == pytest.approx(first_block + later_blocks)
    assert predict_allscan("ring", n, p, ScanLinks(LINK, LINK)) == predict_allscan("ring", n, p, LINK)


def test_block_count_is_the_model_optimum_clamped_to_the_rows():
    n, p = 1 << 20, 8
    k_star = math.sqrt((p - 2) * n * LINK.beta / LINK.alpha)
    k = best_blocks(n, p, LINK)
    assert k in (math.floor(k_star), math.ceil(k_star))
    assert predict_allscan("pipeline", n, p, LINK, k) <= min(
        predict_allscan("pipeline", n, p, LINK, j) for j in range(1, 200))
    assert best_blocks(n, p, LINK, max_blocks=3) == 3
    assert best_blocks(n, p, LINK, max_blocks=0) == 1
    assert best_blocks(0, p, LINK) == 1 and best_blocks(n, 1, LINK) == 1
    assert best_blocks(n, 2, LINK) == 1  # one hop: splitting the message only adds α
    assert best_blocks(n, p, LinkCost(0.0, LINK.beta), max_blocks=64) == 64


def test_block_count_weighs_the_chain_saving_against_shift_rounds():
    n, p = 64 << 20, 8
    k_star = math.sqrt(n * ((p - 1) * CHAIN.beta - SHIFT.beta) / SHIFT.alpha)
    k = best_blocks(n, p, BUSY)
    assert k in (math.floor(k_star), math.ceil(k_star))
    assert predict_allscan("pipeline", n, p, BUSY, k) <= min(
        predict_allscan("pipeline", n, p, BUSY, j) for j in range(1, 400))
    assert best_blocks(n, 4, BUSY) == 1  # 3 β_c < β_s: a round moves bytes no faster than the chain


def test_measured_block_cost_bounds_the_block_count():
    """hpcrt's work per block (tens of µs in Python) adds to each later block and so shrinks K."""
    n, p = 16 << 20, 8
    lean = ScanLinks(LINK, LINK)
    heavy = ScanLinks(LINK, LINK, block=100 * LINK.alpha)
    assert heavy.block_alpha == 100 * LINK.alpha and ScanLinks(LINK, LINK, block=0.0).block_alpha == LINK.alpha
    tenth = best_blocks(n, p, lean) / 10
    assert best_blocks(n, p, heavy) in (math.floor(tenth), math.ceil(tenth))
    # every hop of the first block's chain and each of the K − 1 later blocks pays it
    extra = predict_allscan("pipeline", n, p, heavy, blocks=9) - predict_allscan("pipeline", n, p, lean, blocks=9)
    assert extra == pytest.approx((p - 1 + 8) * 99 * LINK.alpha)
    ring_extra = predict_allscan("ring", n, p, heavy) - predict_allscan("ring", n, p, lean)
    assert ring_extra == pytest.approx((p - 1) * 99 * LINK.alpha)


def test_mpis_scan_is_priced_by_its_own_timed_round_where_measured():
    """With measured rounds of MPI's scan, ``mpi`` costs ⌈log₂p⌉ of them (not shift rounds), by the
    piece its size falls in: a shift round dearer than MPI's own made the pipeline look cheaper."""
    n, p = 128 << 10, 4
    slow_shift = ScanLinks(LINK, LinkCost(35e-6, 1 / 1e9))
    cached, beyond = LinkCost(13e-6, 1 / 2.6e9), LinkCost(-40e-6, 1 / 1.3e9)
    measured = ScanLinks(LINK, LinkCost(35e-6, 1 / 1e9), mpi_rounds=(cached, beyond))
    assert predict_allscan("mpi", n, p, slow_shift) == pytest.approx(2 * (35e-6 + n / 1e9))
    assert predict_allscan("mpi", n, p, measured) == pytest.approx(2 * (13e-6 + n / 2.6e9))
    big = 4 * MPI_ROUND_SPLIT  # past the split, the second piece
    assert predict_allscan("mpi", big, p, measured) == pytest.approx(2 * (-40e-6 + big / 1.3e9))
    for algorithm in ("pipeline", "ring", "allgather"):  # the other algorithms' rounds are hpcrt's own
        assert predict_allscan(algorithm, n, p, measured) == predict_allscan(algorithm, n, p, slow_shift)


def test_call_costs_add_to_each_code_path_and_can_turn_the_choice():
    """hpcrt's fixed work per call is added once, by code path (the ring runs the pipeline's code)."""
    n, p = 64 << 10, 2
    bare = ScanLinks(LINK, LINK)
    costly = ScanLinks(LINK, LINK, calls=(("allgather", 80e-6), ("mpi", 30e-6), ("pipeline", 70e-6)))
    for algorithm, extra in (("mpi", 30e-6), ("ring", 70e-6), ("pipeline", 70e-6), ("allgather", 80e-6)):
        added = predict_allscan(algorithm, n, p, costly, blocks=1) - predict_allscan(algorithm, n, p, bare, blocks=1)
        assert added == pytest.approx(extra)
    assert predict_allscan("mpi", n, 1, costly) == pytest.approx(30e-6)  # one rank: no messages, the call still runs
    assert ScanLinks(LINK, LINK, calls=(("mpi", 30e-6),)).call("allgather") == 0.0  # not measured
    assert best_blocks(16 << 20, 8, costly) == best_blocks(16 << 20, 8, bare)  # a fixed cost moves no K
    # messages alone favour the one-hop chain at 2 ranks (the pipeline at K = 1, the ring's code, wins
    # the tie); with the call costs MPI's scan is cheaper
    slow_rounds = ScanLinks(LINK, LinkCost(LINK.alpha, 2 * LINK.beta))
    assert auto_choice(n, p, slow_rounds)[0] == "pipeline"
    assert auto_choice(n, p, ScanLinks(slow_rounds.chain, slow_rounds.shift, calls=costly.calls))[0] == "mpi"
    # an op MPI lacks runs MPI's scan down another path, with its own cost (not measured: the builtin path's)
    assert predict_allscan("mpi", n, p, costly, builtin_op=False) == predict_allscan("mpi", n, p, costly)
    user = ScanLinks(LINK, LINK, calls=(*costly.calls, ("mpi_user", 500e-6)))
    assert auto_choice(n, p, user)[0] == "mpi" and auto_choice(n, p, user, builtin_op=False)[0] == "pipeline"


def test_auto_choice_follows_the_model():
    # Large state over many ranks: the pipeline; a tiny state: MPI's log-p rounds; one rank: free.
    assert auto_choice(64 << 20, 64, LINK, max_blocks=4096)[0] == "pipeline"
    assert auto_choice(64, 64, LINK, max_blocks=1) == ("mpi", 1)
    assert auto_choice(1 << 20, 1, LINK) == ("pipeline", 1)
    assert auto_choice(64 << 20, 64, LINK, blocks=512) == ("pipeline", 512)
    assert auto_choice(64 << 20, 64, LINK, blocks=8)[0] == "mpi"  # too few blocks to pay off
    # At 2 and 3 ranks the all-gather's messages cost what MPI's rounds cost: MPI's call wins the tie.
    assert all(auto_choice(4096, p, ScanLinks(LINK, LINK, block=50 * LINK.alpha))[0] == "mpi" for p in (2, 3))
    # Rounds with every rank at work cost more than hops (oversubscribed cores): the one-block chain.
    assert all(auto_choice(n, 4, BUSY, max_blocks=n) == ("pipeline", 1) for n in (4096, 1 << 20, 64 << 20))
