"""Ring, bidirectional-ring and MPI allreduce / allgather / reduce_scatter against numpy
references, their exact per-link bytes, the auto choice, and mismatched calls."""

import numpy as np
import pytest

import hpcrt
from hpcrt import LinkCost
from hpcrt.collectives import (CollectiveMismatchError, RingCosts, allgather, allreduce, block_bounds, calibrate,
                               count_link_bytes, predict_ring, reduce_scatter, ring_choice, ring_costs)
from hpcrt.collectives.costmodel.rings import auto_choice
from hpcrt.collectives.rings.engine import ring_lanes
from hpcrt.costmodel.model import bottleneck_link
from hpcrt.costmodel.table import UNMEASURED_STEP_WORK

from array_backends import BACKENDS, to_host as host

ALGORITHMS = ("ring", "bidir_ring", "mpi", "auto")
OPS = {"sum": np.add.reduce, "max": np.maximum.reduce, "min": np.minimum.reduce}
DTYPES = (np.float32, np.float64, np.int32, np.int64)


def rank_input(seed: int, rank: int, shape: tuple, dtype) -> np.ndarray:
    """What ``rank`` contributes: every rank can regenerate every other rank's input."""
    rng = np.random.default_rng([seed, rank])
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-1000, 1000, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def matches(got, want) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}.get(got.dtype)
    return np.array_equal(got, want) if tol is None else np.allclose(got, want, rtol=tol, atol=tol)


def shapes_for(p: int) -> list:
    """Sizes 0, 1 (0-d), p − 1 and 1001 (2-D; not divisible by 2, 3 or 4)."""
    return [(0,), (), (max(p - 1, 1),), (7, 143)]


def run_case(comm, collective: str, algorithm: str, op, dtype, shape, backend: str, seed: int):
    """One call on ``comm``; returns a description of what went wrong, or None."""
    p, r = comm.size, comm.rank
    inputs = [rank_input(seed, i, shape, dtype) for i in range(p)]
    mine = BACKENDS[backend](inputs[r])
    before = host(mine).copy()
    if collective == "allgather":
        got = allgather(mine, comm=comm, algorithm=algorithm)
        want = np.concatenate([a.reshape(1) if a.ndim == 0 else a for a in inputs])
    else:
        call = allreduce if collective == "allreduce" else reduce_scatter
        got = call(mine, op, comm=comm, algorithm=algorithm)
        reduced = OPS[op](np.stack(inputs), axis=0).astype(dtype)
        want = reduced if collective == "allreduce" else np.array_split(reduced.reshape(-1), p)[r]
    label = f"{collective} {algorithm} {op} {np.dtype(dtype).name} {shape} {backend} p={p}"
    if type(got) is not type(mine):
        return f"{label}: result on {type(got).__name__}, input on {type(mine).__name__}"
    if not np.array_equal(host(mine), before):
        return f"{label}: input modified"
    if not matches(host(got), want):
        return f"{label}: wrong result"
    return None


def assert_no_errors(comm, errors: list) -> None:
    """Fail on every rank, listing every rank's errors, if any rank has one."""
    everyone = comm.allgather(errors)
    assert not any(everyone), [(rank, e) for rank, errs in enumerate(everyone) for e in errs[:5]]


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=150)
def test_collectives_match_numpy(comm):
    hpcrt.init({"log_files": False})
    errors, seed = [], 0
    for backend in BACKENDS:
        for dtype in DTYPES:
            for shape in shapes_for(comm.size):
                for algorithm in ALGORITHMS:
                    seed += 1
                    errors.append(run_case(comm, "allgather", algorithm, None, dtype, shape, backend, seed))
                    for op in OPS:
                        for collective in ("allreduce", "reduce_scatter"):
                            errors.append(run_case(comm, collective, algorithm, op, dtype, shape, backend, seed))
    assert_no_errors(comm, [e for e in errors if e])


@pytest.mark.mpi(ranks=[3, 4], timeout=120)
def test_large_strided_and_subcommunicator(comm):
    rt = hpcrt.init({"log_files": False})
    errors = []
    for algorithm in ("ring", "bidir_ring"):  # 4 MiB of float32 per rank
        for collective, op in (("allreduce", "sum"), ("reduce_scatter", "max"), ("allgather", None)):
            errors.append(run_case(comm, collective, algorithm, op, np.float32, (1 << 20,), "numpy", 99))
    # a non-contiguous input is copied, on both backends
    inputs = [rank_input(5, i, (6, 10), np.float64) for i in range(comm.size)]
    for convert in BACKENDS.values():
        strided = convert(inputs[comm.rank])[:, ::3]
        for algorithm in ALGORITHMS:
            got = host(allreduce(strided, "sum", comm=comm, algorithm=algorithm))
            if not matches(got, sum(a[:, ::3] for a in inputs)):
                errors.append(f"strided allreduce {algorithm}")
            got = host(allgather(strided, comm=comm, algorithm=algorithm))
            if not matches(got, np.concatenate([a[:, ::3] for a in inputs])):
                errors.append(f"strided allgather {algorithm}")
    # default communicator (the runtime's), and a sub-communicator of the even / odd ranks
    errors.append(run_case(rt.comm, "allreduce", "bidir_ring", "sum", np.int64, (1000,), "numpy", 7))
    half = comm.Split(comm.rank % 2, comm.rank)
    for algorithm in ALGORITHMS:
        errors.append(run_case(half, "reduce_scatter", algorithm, "min", np.float64, (1000,), "fakegpu", 8))
        errors.append(run_case(half, "allreduce", algorithm, "sum", np.float64, (1000,), "numpy", 9))
    half.Free()
    assert_no_errors(comm, [e for e in errors if e])


def block_sizes(n: int, p: int) -> list:
    return [stop - start for start, stop in block_bounds(n, p)]


def bidir_bytes(sizes: list, r: int, d: int) -> tuple:
    """Items rank r sends towards r + d in a bidirectional reduce-scatter and in an all-gather of
    pieces ``sizes``, worked out per piece rather than per step: a piece serves the ranks up to
    (p − 1)/2 away on either side of its owner from that side, and the rank opposite it (even p)
    gets its first half clockwise, its second half counter-clockwise. In the reduce-scatter rank r
    passes on toward r + d the partial sums of the pieces it is on the way to (owners 1 … p/2
    steps ahead); in the all-gather the pieces whose next rank that way still needs them (owners
    0 … p/2 − 1 steps behind)."""
    p = len(sizes)

    def carried(owner: int, distance: int) -> int:
        """What of piece ``owner`` travels toward the rank ``distance`` steps away in direction d."""
        if 2 * distance < p:
            return sizes[owner]
        first, second = block_sizes(sizes[owner], 2)
        return (first if d > 0 else second) if 2 * distance == p else 0

    scatter = sum(carried((r + d * k) % p, k) for k in range(1, p))
    gather = sum(carried((r - d * k) % p, k + 1) for k in range(p - 1))
    return scatter, gather


@pytest.mark.mpi(ranks=[2, 3, 4, 5, 6], timeout=60)
def test_ring_link_bytes_are_exact(comm):
    rt = hpcrt.init({"log_files": False})
    p, r, n, item = comm.size, comm.rank, 1001, 8
    right, left = (r + 1) % p, (r - 1) % p
    x = rank_input(1, r, (n,), np.float64)
    blocks = block_sizes(n, p)

    with count_link_bytes() as ring:
        allreduce(x, comm=rt.comm, algorithm="ring")
    # reduce-scatter sends every block but rank r's, all-gather every block but rank r + 1's
    assert ring.sent == {(r, right): (2 * n - blocks[r] - blocks[right]) * item}
    assert abs(ring.total() - 2 * (p - 1) / p * n * item) <= 2 * item

    with count_link_bytes() as bidir:
        allreduce(x, comm=rt.comm, algorithm="bidir_ring")
    if p >= 3:
        to_right, to_left = (sum(bidir_bytes(blocks, r, d)) * item for d in (1, -1))
        assert bidir.sent == {(r, right): to_right, (r, left): to_left}
        assert abs(to_right - ring.total() / 2) <= 2 * item and abs(to_left - ring.total() / 2) <= 2 * item
    else:
        assert bidir.sent == ring.sent

    with count_link_bytes() as gather:
        allgather(x, comm=rt.comm, algorithm="ring")
    assert gather.sent == {(r, right): (p - 1) * n * item}
    with count_link_bytes() as gather2:
        allgather(x, comm=rt.comm, algorithm="bidir_ring")
    assert gather2.total() == (p - 1) * n * item
    if p >= 3:
        assert gather2.sent == {(r, right): bidir_bytes([n] * p, r, 1)[1] * item,
                                (r, left): bidir_bytes([n] * p, r, -1)[1] * item}

    with count_link_bytes() as scatter:
        reduce_scatter(x, comm=rt.comm, algorithm="ring")
    assert scatter.sent == {(r, right): (n - blocks[r]) * item}
    with count_link_bytes() as scatter2:
        reduce_scatter(x, comm=rt.comm, algorithm="bidir_ring")
    if p >= 3:
        assert scatter2.sent == {(r, right): bidir_bytes(blocks, r, 1)[0] * item,
                                 (r, left): bidir_bytes(blocks, r, -1)[0] * item}

    with count_link_bytes() as plain:
        allreduce(x, comm=rt.comm, algorithm="mpi")
        allgather(x, comm=rt.comm, algorithm="mpi")
        reduce_scatter(x, comm=rt.comm, algorithm="mpi")
    assert plain.sent == {}


@pytest.mark.mpi(ranks=[4], timeout=60)
def test_ring_choice_names_what_auto_runs(comm):
    """On a link where bandwidth weighs, with ring steps that cost what hpcrt's work on a step does
    (as calibrate() would measure them), the rings win from some size on and MPI's call below it:
    ring_choice says which, and the bytes auto puts on the links show that is what ran. Allgather's
    model prices the gathered result (p times the input): at 32 KiB in, 128 KiB out, it is the
    rings' already."""
    rt = hpcrt.init({"log_files": False})
    try:
        rt.costs = rt.costs.with_measured(links={"intra": LinkCost(alpha=1e-6, beta=1 / 1e9)},
                                          steps={"ring": LinkCost(alpha=10e-6, beta=1 / 1e9),
                                                 "bidir_ring": LinkCost(alpha=12e-6, beta=1 / 1e9)})
        small, mid, large = np.ones(8), np.ones(4096), np.ones(16384)
        expected = [("allreduce", small, "mpi"), ("allreduce", large, "bidir_ring"), ("allgather", small, "mpi"),
                    ("allgather", mid, "bidir_ring"), ("reduce_scatter", small, "mpi"),
                    ("reduce_scatter", large, "bidir_ring")]
        run = {"allreduce": allreduce, "allgather": allgather, "reduce_scatter": reduce_scatter}
        neighbours = {(comm.rank, (comm.rank + 1) % 4), (comm.rank, (comm.rank - 1) % 4)}
        for collective, x, algorithm in expected:
            assert ring_choice(collective, x, comm=rt.comm) == algorithm, (collective, x.nbytes)
            with count_link_bytes() as sent:
                run[collective](x, comm=rt.comm)
            assert set(sent.sent) == (set() if algorithm == "mpi" else neighbours), (collective, x.nbytes)
        # priced at the input alone, 32 KiB would have gone to MPI's allgather
        assert auto_choice("allgather", mid.nbytes, 4, ring_costs(rt.costs, rt.topology)) == "mpi"
        # nothing measured: a step costs the link plus hpcrt's nominal work on it, and MPI's call wins
        # the small sizes, although ⌊p/2⌋ bidirectional steps pay no more link α than its rounds
        rt.costs = rt.costs.with_measured(steps={})
        for collective in ("allreduce", "allgather", "reduce_scatter"):
            assert ring_choice(collective, small, comm=rt.comm) == "mpi", collective
        assert ring_choice("allreduce", np.ones(1 << 20), comm=rt.comm) == "bidir_ring"
        with pytest.raises(ValueError, match="unknown collective"):
            ring_choice("all_scan", small)
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_operands_no_algorithm_can_take_are_refused_alike(comm):
    """An op a dtype does not have (sum on booleans, max and min on complex numbers) or something
    that is not an array gets the same TypeError from every algorithm, on every rank, before any
    message; one rank's bad operand is every rank's error; what all algorithms take, they agree on."""
    hpcrt.init({"log_files": False})
    for algorithm in ALGORITHMS:
        with pytest.raises(TypeError, match="'sum' is not defined for dtype bool"):
            allreduce(np.ones(3, bool), comm=comm, algorithm=algorithm)
        for op in ("max", "min"):
            with pytest.raises(TypeError, match=f"'{op}' is not defined for dtype complex128"):
                reduce_scatter(np.ones(6, complex), op, comm=comm, algorithm=algorithm)
        with pytest.raises(TypeError, match="expected a numpy or CuPy array, got list"):
            allreduce([1.0, 2.0], comm=comm, algorithm=algorithm)
        with pytest.raises(CollectiveMismatchError, match="disagree on input_error.*dtype object"):
            allgather(np.ones(2, object if comm.rank == 1 else float), comm=comm, algorithm=algorithm)
        with pytest.raises(TypeError, match="not in this machine's byte order"):
            allgather(np.ones(2, np.dtype(np.float64).newbyteorder()), comm=comm, algorithm=algorithm)
        got = allreduce(np.full(3, 1 + 1j), comm=comm, algorithm=algorithm)
        assert np.array_equal(got, np.full(3, comm.size * (1 + 1j))), algorithm
        assert np.array_equal(allgather(np.ones(2, bool), comm=comm, algorithm=algorithm), np.ones(2 * comm.size, bool))


@pytest.mark.mpi(ranks=[3], timeout=60)
def test_disagreeing_ranks_all_get_the_error(comm):
    hpcrt.init({"log_files": False})
    odd = comm.rank == 1
    x = np.ones(10)
    calls = {
        "shape": lambda: allreduce(np.ones(11) if odd else x),
        "dtype": lambda: allgather(x.astype(np.float32) if odd else x),
        "op": lambda: reduce_scatter(x, "max" if odd else "sum"),
        "algorithm": lambda: allreduce(x, algorithm="ring" if odd else "bidir_ring"),
    }
    for field, call in calls.items():
        with pytest.raises(CollectiveMismatchError, match=f"disagree on {field}"):
            call()
    with pytest.raises(ValueError, match="unknown reduction op 'prod'"):
        allreduce(x, "prod")
    with pytest.raises(ValueError, match="unknown algorithm 'tree'"):
        allgather(x, algorithm="tree")
    assert np.array_equal(allreduce(x, algorithm="ring"), x * comm.size)  # nothing left in flight


def test_block_bounds_follow_array_split():
    for n in (0, 1, 5, 1000, 1001):
        for p in (1, 2, 3, 4, 7):
            got = block_bounds(n, p)
            assert [b - a for a, b in got] == [len(a) for a in np.array_split(np.arange(n), p)]
            assert got[0][0] == 0 and got[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    with pytest.raises(ValueError):
        block_bounds(10, 0)


def test_bidirectional_lanes_split_the_ring_from_three_ranks():
    """Each piece goes half the ring round each way: at odd p whole pieces (p − 1)/2 hops, at even p
    p/2 hops with the opposite rank's part halved between the two directions."""
    for n, p in ((10, 3), (7, 4), (1001, 16), (5, 8), (12, 5)):
        blocks = block_bounds(n, p)
        forward, backward = ring_lanes(blocks, "bidir_ring")
        assert (forward.direction, backward.direction) == (1, -1)
        assert forward.hops == backward.hops == p // 2 and forward.pieces == backward.pieces == tuple(blocks)
        for (start, stop), (a, b), (c, d) in zip(blocks, forward.far, backward.far):
            middle = start + (stop - start + 1) // 2 if p % 2 == 0 else stop
            assert (a, b) == (start, middle) and (c, d) == ((middle, stop) if p % 2 == 0 else (start, stop))
    # two ranks: both directions reach the one neighbour, so it is the ring
    assert ring_lanes(block_bounds(10, 2), "bidir_ring") == ring_lanes(block_bounds(10, 2), "ring")
    assert ring_lanes(block_bounds(10, 5), "ring")[0].hops == 4


@pytest.mark.mpi(ranks=[5, 6], timeout=90)
def test_bidirectional_ring_at_five_and_six_ranks(comm):
    """Odd and even rank counts past four, where pieces travel more than one hop each way, with
    sizes that leave pieces and halves empty."""
    hpcrt.init({"log_files": False})
    errors = []
    for shape in ((0,), (), (comm.size - 1,), (comm.size + 1,), (7, 143)):
        for dtype in (np.float64, np.int32):
            errors.append(run_case(comm, "allgather", "bidir_ring", None, dtype, shape, "numpy", 3))
            for collective, op in (("allreduce", "sum"), ("reduce_scatter", "max"), ("allreduce", "min")):
                errors.append(run_case(comm, collective, "bidir_ring", op, dtype, shape, "numpy", 4))
    assert_no_errors(comm, [e for e in errors if e])


def test_predictions_and_auto_choice():
    link = LinkCost(alpha=2e-6, beta=1 / 25e9)
    n = 1 << 26
    ring = predict_ring("allreduce", "ring", n, 8, link)
    assert ring == pytest.approx(14 * (link.alpha + n / 8 * link.beta))
    # two lanes, each with half the bytes, in p/2 steps a phase instead of p − 1
    bidir = predict_ring("allreduce", "bidir_ring", n, 8, link)
    assert bidir == pytest.approx(8 * (link.alpha + 7 * n / 64 * link.beta))
    assert predict_ring("allgather", "bidir_ring", n, 7, link) == pytest.approx(3 * (link.alpha + n / 7 * link.beta))
    assert predict_ring("allgather", "ring", n, 8, link) == pytest.approx(7 * (link.alpha + n / 8 * link.beta))
    assert predict_ring("reduce_scatter", "mpi", n, 8, link) == pytest.approx(3 * link.alpha + 7 / 8 * n * link.beta)
    assert predict_ring("allreduce", "ring", n, 1, link) == 0.0
    # at p = 2 both halves share the one neighbour: no gain
    assert predict_ring("allreduce", "bidir_ring", n, 2, link) == predict_ring("allreduce", "ring", n, 2, link)
    assert auto_choice("allreduce", 8, 8, link) == "mpi"  # latency-bound
    assert auto_choice("allreduce", n, 8, link) == "bidir_ring"  # bandwidth-bound
    assert auto_choice("allgather", n, 2, link) == "mpi"
    with pytest.raises(ValueError):
        predict_ring("allreduce", "tree", n, 8, link)
    with pytest.raises(ValueError):
        predict_ring("scan", "ring", n, 8, link)


def test_measured_costs_price_each_algorithm():
    """Measured steps price the ring algorithms (never below the slowest link), MPI's measured
    allreduce prices its call (allgather and reduce_scatter at half); a bidirectional step that costs
    more than two of the ring's (two lanes sharing one core, and more) turns the choice from
    bidir_ring to ring, and a slow measured MPI call turns it from MPI to the rings."""
    link = LinkCost(alpha=2e-6, beta=1 / 25e9)
    n, p = 1 << 26, 8
    ring_step, bidir_step, mpi_call = LinkCost(20e-6, 1 / 5e9), LinkCost(45e-6, 2.5 / 5e9), LinkCost(50e-6, 1 / 2e9)
    costs = RingCosts(link, (("ring", ring_step), ("bidir_ring", bidir_step)), mpi_call)
    assert predict_ring("allreduce", "ring", n, p, costs) == pytest.approx(14 * (20e-6 + n / 8 / 5e9))
    assert predict_ring("allreduce", "bidir_ring", n, p, costs) == pytest.approx(8 * (45e-6 + 7 * n / 64 * 2.5 / 5e9))
    assert predict_ring("allreduce", "mpi", n, p, costs) == pytest.approx(50e-6 + n / 2e9)
    assert predict_ring("reduce_scatter", "mpi", n, p, costs) == pytest.approx((50e-6 + n / 2e9) / 2)
    assert auto_choice("allreduce", n, p, link) == "bidir_ring"
    assert auto_choice("allreduce", n, p, costs) == "ring"
    assert auto_choice("allreduce", n, p, RingCosts(link, costs.steps)) == "mpi"  # MPI at the link alone
    # Measurements below the link's formula (noise) are charged the formula; what was not measured, the link.
    fast = RingCosts(link, (("ring", LinkCost(1e-7, 1e-12)),), LinkCost(1e-7, 1e-12))
    assert predict_ring("allgather", "ring", n, p, fast) == pytest.approx(7 * link.time(n / 8))
    assert predict_ring("allgather", "bidir_ring", n, p, fast) == pytest.approx(4 * link.time(7 * n / 64))
    assert predict_ring("allgather", "mpi", n, p, fast) == predict_ring("allgather", "mpi", n, p, link)


@pytest.mark.mpi(ranks=[2, 3], timeout=90)
def test_calibrate_measures_what_ring_auto_weighs(comm):
    """calibrate() puts every ring algorithm's step and MPI's allreduce into the runtime's cost
    table, the same on every rank; ring_choice then follows the model at those costs, and a subset of the ranks,
    where nothing was measured, is priced at its links alone."""
    rt = hpcrt.init({"log_files": False})
    try:
        table = calibrate()
        assert rt.costs is table and set(table.steps) == {"ring", "bidir_ring"}
        measured = [*table.steps.values(), table.calls["allreduce/mpi"]]
        assert all(cost.alpha > 0 and cost.beta > 0 for cost in measured), measured
        assert comm.allgather(table) == [table] * comm.size
        costs = ring_costs(rt.costs, rt.topology)
        assert dict(costs.steps) == table.steps and costs.mpi_allreduce == table.calls["allreduce/mpi"]
        subset = list(range(comm.size - 1))  # measured over all ranks: a subset pays its links (and
        # hpcrt's nominal work per step) alone
        assert ring_costs(rt.costs, rt.topology, subset) == RingCosts(bottleneck_link(rt.costs, rt.topology, subset),
                                                                      step_work=UNMEASURED_STEP_WORK)
        for nbytes in (8, 1 << 16, 1 << 22):
            x = np.ones(nbytes // 8)
            assert ring_choice("allreduce", x, comm=rt.comm) == auto_choice("allreduce", nbytes, comm.size, costs)
    finally:
        hpcrt.finalize()
