"""All-Scan against a serial numpy fold: every algorithm, op, direction, dtype and size, numpy and
fake-GPU arrays, at 1–4 ranks; mismatched calls; the exact bytes each schedule sends."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from array_backends import BACKENDS, rotating_backend, to_backend, to_host
from conftest import assert_no_failures

ALGORITHMS = ("pipeline", "allgather", "ring", "mpi", "auto")


def _matmul_identity(x):
    from hpcrt import get_xp
    xp = get_xp(x)
    return xp.zeros(x.shape, dtype=x.dtype) + xp.eye(2, dtype=x.dtype)


def _ops():
    """Operator name → (the op all_scan gets, a serial combine written independently of it)."""
    from hpcrt.collectives import ScanOp
    return {
        "sum": ("sum", lambda lo, hi: lo + hi),
        "max": ("max", np.maximum),
        "affine": ("affine", lambda lo, hi: (lo[0] * hi[0], hi[0] * lo[1] + hi[1])),
        # Batched 2×2 matrix products: row-wise (the pipeline may split the batch), not commutative.
        "matmul": (ScanOp(lambda lo, hi: lo @ hi, _matmul_identity, "matmul", rowwise=True), np.matmul),
        # One 2×2 matrix product: not row-wise, so it travels as one block.
        "matmul1": (ScanOp(lambda lo, hi: lo @ hi, _matmul_identity, "matmul1"), np.matmul),
    }


def _identity(name, like):
    if name == "sum":
        return np.zeros_like(like)
    if name == "max":
        return np.full_like(like, -np.inf if like.dtype.kind == "f" else np.iinfo(like.dtype).min)
    if name == "affine":
        return np.ones_like(like[0]), np.zeros_like(like[1])
    return np.zeros_like(like) + np.eye(2)


def _operands(name, dtype, rows, size, seed, shared=False):
    """Every rank's operand, the same on every rank (seeded)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def draw(shape):
        if dtype.kind == "i":
            return rng.integers(-50, 50, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    if name == "affine":
        a_shape = (3,) if shared else (rows, 1)
        return [(rng.uniform(0.5, 1.5, size=a_shape).astype(dtype), draw((rows, 3))) for _ in range(size)]
    if name == "matmul":
        return [draw((rows, 2, 2)) for _ in range(size)]
    if name == "matmul1":
        return [draw((2, 2)) for _ in range(size)]
    return [draw((rows, 3)) for _ in range(size)]


def _reference(name, combine, xs, rank, inclusive, reverse):
    first, last = (rank + (0 if inclusive else 1), len(xs)) if reverse else (0, rank + (1 if inclusive else 0))
    if first >= last:
        return _identity(name, xs[rank])
    folded = xs[first]
    for x in xs[first + 1:last]:
        folded = combine(folded, x)
    return folded


def _parts(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


def _compare(got, want, backend, dtype):
    """A description of what differs, or None."""
    got, want = _parts(got), _parts(want)
    if len(got) != len(want):
        return f"{len(got)} arrays, want {len(want)}"
    for g, w in zip(got, want):
        expected_type = type(BACKENDS[backend](np.zeros(1)))
        if not isinstance(g, expected_type):
            return f"result is a {type(g).__name__}, want {expected_type.__name__}"
        g = to_host(g)
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"result {g.shape} {g.dtype}, want {w.shape} {w.dtype}"
        tol = {"float32": 1e-4, "float64": 1e-11}.get(str(w.dtype), 0)
        if not np.allclose(g, w, rtol=tol, atol=tol):
            return f"values differ by up to {np.max(np.abs(g - w))}"
    return None


@pytest.mark.mpi(ranks=[1, 2, 3, 4], timeout=150)
def test_all_scan_matches_serial_fold(comm):
    import hpcrt
    from hpcrt.collectives import all_scan
    hpcrt.init({"log_files": False})
    ops = _ops()
    cases = [("sum", d) for d in ("float32", "float64", "int32", "int64")]
    cases += [("max", d) for d in ("float32", "float64", "int32", "int64")]
    cases += [("affine", "float32"), ("affine", "float64"), ("matmul", "float64"), ("matmul1", "float64")]
    failures = []
    seed = 0
    for (name, dtype), rows in itertools.product(cases, (0, 1, 1000)):
        for shared in ((False, True) if name == "affine" else (False,)):
            seed += 1
            backend = rotating_backend(seed)  # each case meets every backend across sizes
            xs = _operands(name, dtype, rows, comm.size, seed, shared)
            op, combine = ops[name]
            for algorithm, inclusive, reverse in itertools.product(ALGORITHMS, (False, True), (False, True)):
                blocks = (None, 3, 7, 50)[seed % 4] if algorithm == "pipeline" else None
                want = _reference(name, combine, xs, comm.rank, inclusive, reverse)
                got = all_scan(to_backend(xs[comm.rank], backend), op, inclusive=inclusive, reverse=reverse,
                               algorithm=algorithm, blocks=blocks)
                problem = _compare(got, want, backend, dtype)
                if problem:
                    failures.append(f"{name} {dtype} rows={rows} shared={shared} {backend} {algorithm} "
                                    f"blocks={blocks} inclusive={inclusive} reverse={reverse}: {problem}")
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[3], timeout=60)
def test_all_scan_odd_inputs(comm):
    """Non-contiguous input (copied), 0-d states, a user op given as a plain object, a
    sub-communicator: all against the serial fold."""
    import hpcrt
    from hpcrt.collectives import all_scan
    runtime = hpcrt.init({"log_files": False})
    evens = runtime.comm.Split(comm.rank % 2, comm.rank)  # {0, 2} and {1}
    rng = np.random.default_rng(7)
    wide = [rng.standard_normal((50, 8)) for _ in range(comm.size)]
    scalars = [np.array(rng.standard_normal()) for _ in range(comm.size)]

    class Concat:
        """Keeps the leftmost operand: associative, not commutative."""

        name = "first"

        def combine(self, lower, upper):
            return lower

        def identity(self, x):
            return np.full_like(x, np.nan)

    failures = []
    for algorithm in ALGORITHMS:
        got = all_scan(wide[comm.rank][:, ::3], "sum", algorithm=algorithm, inclusive=True)
        if not np.allclose(got, sum(w[:, ::3] for w in wide[:comm.rank + 1])):
            failures.append(f"non-contiguous {algorithm}")
        got = all_scan(scalars[comm.rank], "max", algorithm=algorithm, reverse=True, inclusive=True)
        if got.shape != () or got != max(scalars[comm.rank:]):
            failures.append(f"0-d {algorithm}: {got!r}")
        got = all_scan(wide[comm.rank], Concat(), algorithm=algorithm, reverse=True)
        want = wide[comm.rank + 1] if comm.rank + 1 < comm.size else np.full((50, 8), np.nan)
        if not np.array_equal(got, want, equal_nan=True):
            failures.append(f"user op object {algorithm}")
        got = all_scan(wide[comm.rank], "sum", comm=evens, algorithm=algorithm, inclusive=True)
        if not np.allclose(got, sum(wide[r] for r in range(comm.rank % 2, comm.rank + 1, 2))):
            failures.append(f"sub-communicator {algorithm}")
    evens.Free()
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_mixed_item_sizes_reach_the_op_aligned(comm):
    """A state of float64 and int8 rows (5 rows: 55 bytes, not a multiple of 8): every algorithm
    hands the op aligned arrays (a GPU kernel faults on misaligned ones) and gives the serial fold."""
    import hpcrt
    from hpcrt.collectives import ScanOp, all_scan
    hpcrt.init({"log_files": False})

    def add_aligned(lower, upper):
        for part in (*lower, *upper):
            if not part.flags.aligned:
                raise AssertionError(f"misaligned {part.dtype} operand")
        return lower[0] + upper[0], lower[1] + upper[1]

    pair_sum = ScanOp(add_aligned, lambda x: (np.zeros_like(x[0]), np.zeros_like(x[1])), "pair sum", rowwise=True)
    xs = [(np.full((5, 1), r + 0.5), np.full((5, 3), r + 1, dtype=np.int8)) for r in range(comm.size)]
    failures = []
    for algorithm in ALGORITHMS:
        try:
            got_a, got_b = all_scan(xs[comm.rank], pair_sum, algorithm=algorithm, inclusive=True)
        except AssertionError as error:
            failures.append(f"{algorithm}: {error}")
            continue
        want_a, want_b = sum(x[0] for x in xs[:comm.rank + 1]), sum(x[1] for x in xs[:comm.rank + 1])
        if not (np.array_equal(got_a, want_a) and np.array_equal(got_b, want_b) and got_b.dtype == np.int8):
            failures.append(f"{algorithm}: {got_a[0]}, {got_b[0]}; want {want_a[0]}, {want_b[0]}")
    assert_no_failures(comm, failures)


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_disagreeing_ranks_fail_together(comm):
    import hpcrt
    from hpcrt.collectives import CollectiveMismatchError, ScanOp, all_scan
    hpcrt.init({"log_files": False})
    last = comm.rank == comm.size - 1
    x = np.ones((4, 3))
    mismatches = {
        "shape": lambda: all_scan(np.ones((5 if last else 4, 3)), "sum"),
        "dtype": lambda: all_scan(x.astype(np.float32) if last else x, "sum"),
        "op": lambda: all_scan(x, "max" if last else "sum"),
        "algorithm": lambda: all_scan(x, "sum", algorithm="ring" if last else "pipeline"),
        "reverse": lambda: all_scan(x, "sum", reverse=last),
        # A wrong input on one rank is named on every rank.
        "input_error": lambda: all_scan(x if last else (x, x), "affine"),
    }
    for field, call in mismatches.items():
        with pytest.raises(CollectiveMismatchError, match=f"disagree on {field}"):
            call()
    # A user op named like a builtin is not the builtin: MPI would run one, not the other.
    own_sum = ScanOp(lambda lo, hi: lo + hi, np.zeros_like, "sum", rowwise=True)
    with pytest.raises(CollectiveMismatchError, match=r"disagree on op.*user op"):
        all_scan(x, own_sum if last else "sum")
    # Everyone wrong the same way: the op's own TypeError, on every rank.
    with pytest.raises(TypeError, match="takes a pair"):
        all_scan(x, "affine")
    with pytest.raises(TypeError, match="broadcastable"):
        all_scan((np.ones((4, 2)), x), "affine")
    with pytest.raises(ValueError, match="unknown algorithm"):
        all_scan(x, "sum", algorithm="tree")
    with pytest.raises(ValueError, match="blocks applies to the pipeline"):
        all_scan(x, "sum", algorithm="ring", blocks=2)
    with pytest.raises(ValueError, match="blocks must be a positive integer"):
        all_scan(x, "sum", blocks=True)
    # An op or a dtype that cannot go together is refused before any message, on every rank.
    with pytest.raises(TypeError, match="'max' is not defined for dtype complex128"):
        all_scan(x.astype(complex), "max")
    with pytest.raises(TypeError, match="not defined for dtype object"):
        all_scan(x.astype(object), "sum")
    with pytest.raises(TypeError, match="not in this machine's byte order"):
        all_scan(x.astype(x.dtype.newbyteorder()), "sum")
    with pytest.raises(CollectiveMismatchError, match="disagree on input_error.*dtype object"):
        all_scan(x.astype(object) if last else x, "sum")
    # The communicator still works afterwards.
    assert np.array_equal(all_scan(x, "sum", inclusive=True), x * (comm.rank + 1))


@pytest.mark.mpi(ranks=[2, 3, 4], timeout=60)
def test_bytes_each_schedule_sends(comm):
    """pipeline and ring: each rank but the chain's last sends exactly n bytes, all to its
    successor; allgather (Bruck): every rank sends exactly (p−1)·n bytes."""
    import hpcrt
    from hpcrt.collectives import all_scan, count_link_bytes
    runtime = hpcrt.init({"log_files": False})
    world = runtime.comm.rank
    p, r = comm.size, comm.rank
    states = {
        "affine": (np.full((64, 1), 0.5), np.ones((64, 32))),
        "affine, shared a": (np.full((32,), 0.5, dtype=np.float32), np.ones((64, 32))),
        "sum f32": np.ones((100, 7), dtype=np.float32),
    }
    for (label, x), backend, reverse in itertools.product(states.items(), BACKENDS, (False, True)):
        n = sum(part.nbytes for part in _parts(x))
        successor = r - 1 if reverse else r + 1
        for algorithm, blocks in (("pipeline", 5), ("pipeline", None), ("ring", None)):
            with count_link_bytes() as window:
                all_scan(to_backend(x, backend), label.split(",")[0].split()[0], algorithm=algorithm,
                         blocks=blocks, reverse=reverse)
            want = {(world, successor): n} if 0 <= successor < p else {}
            assert window.sent == want, (label, backend, algorithm, reverse, window.sent)
        with count_link_bytes() as window:
            all_scan(to_backend(x, backend), label.split(",")[0].split()[0], algorithm="allgather", reverse=reverse)
        assert window.total() == (p - 1) * n, (label, backend, window.sent)


@pytest.mark.mpi(ranks=[2, 4], timeout=60)
def test_started_scans_overlap_local_work(comm):
    """A forward and a reverse scan in flight together, local work (uneven across ranks) between
    start and wait, waits in start order: results as a serial fold of every rank's pair in numpy."""
    import hpcrt
    from hpcrt.collectives import all_scan_start
    hpcrt.init({"log_files": False})
    rng = np.random.default_rng(3)
    pairs = [(rng.uniform(0.5, 1.0, (40, 1)), rng.standard_normal((40, 6))) for _ in range(comm.size)]
    mine = pairs[comm.rank]
    for algorithm in ALGORITHMS:
        forward = all_scan_start(mine, "affine", algorithm=algorithm)
        backward = all_scan_start(mine, "affine", algorithm=algorithm, reverse=True, inclusive=True)
        time.sleep(0.02 * comm.rank)
        got_forward, got_backward = forward.wait(), backward.wait()
        again = forward.wait()  # a second wait returns the first result again
        assert len(again) == 2 and all(np.array_equal(a, g) for a, g in zip(again, got_forward)), algorithm
        combine = _ops()["affine"][1]
        for got, want in ((got_forward, _reference("affine", combine, pairs, comm.rank, False, False)),
                          (got_backward, _reference("affine", combine, pairs, comm.rank, True, True))):
            assert all(np.allclose(g, w, rtol=1e-12) for g, w in zip(got, want)), algorithm


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_scans_waited_out_of_order_or_never(comm):
    """Waiting a scan finishes the ones started before it on the communicator: scans waited in
    reverse order, or dropped unwaited before another scan, give every result right (before, they
    crossed messages or wrote into freed buffers), and a failed wait raises its error again."""
    import hpcrt
    from hpcrt.collectives import ScanOp, all_scan, all_scan_start
    hpcrt.init({"log_files": False})
    r, p = comm.rank, comm.size
    before = sum(range(r))  # the exclusive sum of the ranks' numbers below r
    for algorithm in ALGORITHMS:
        first = all_scan_start(np.full(3, 1.0 * r), "sum", algorithm=algorithm)
        second = all_scan_start(np.full(3, 100.0 * r), "sum", algorithm=algorithm)
        assert np.array_equal(second.wait(), np.full(3, 100.0 * before)), algorithm
        assert np.array_equal(first.wait(), np.full(3, 1.0 * before)), algorithm
        all_scan_start(np.arange(3.0) + r, "sum", algorithm=algorithm)  # dropped
        got = all_scan(np.arange(3.0) + 10 * r, "sum", algorithm=algorithm, inclusive=True)
        assert np.array_equal(got, sum(np.arange(3.0) + 10 * i for i in range(r + 1))), algorithm

    # A scan never waited on a communicator freed since is let go with it, and does not touch a
    # new communicator (MPI may hand the new one the freed one's handle).
    for algorithm in ALGORITHMS:
        old = comm.Dup()
        all_scan_start(np.ones(2), "sum", comm=old, algorithm=algorithm)
        old.Free()
        new = comm.Dup()
        assert np.array_equal(all_scan(np.ones(2), "sum", comm=new, algorithm=algorithm), np.full(2, 1.0 * r))
        new.Free()

    def failing(lower, upper):
        if r == p - 1:  # the chain's last rank: nobody waits on a message from it
            raise ArithmeticError(f"combine failed on rank {r}")
        return lower + upper

    handle = all_scan_start(np.ones(2), ScanOp(failing, np.zeros_like, "failing"), algorithm="pipeline",
                            inclusive=True)
    for _ in range(2):  # the failing rank raises its error, every other rank one naming it
        if r == p - 1:
            with pytest.raises(ArithmeticError, match=f"combine failed on rank {r}"):
                handle.wait()
        else:
            with pytest.raises(RuntimeError, match=f"rank {p - 1}: ArithmeticError: combine failed on rank {p - 1}"):
                handle.wait()
    assert np.array_equal(all_scan(np.ones(2), "sum", inclusive=True), np.full(2, r + 1.0))


@pytest.mark.mpi(ranks=[1, 2], timeout=60)
def test_auto_follows_the_runtimes_cost_table_as_it_changes(comm):
    """``auto`` remembers the model's links per rank set, but sees measured costs once a new table lands."""
    import hpcrt
    from hpcrt import LinkCost
    from hpcrt.collectives import scan_links
    from hpcrt.collectives.allscan.entry import transport_links
    from hpcrt.collectives.comm.transport import Transport
    runtime = hpcrt.init({"log_files": False})
    try:
        transport = Transport(runtime.comm)
        assert transport_links(transport) == scan_links(runtime.costs, runtime.topology)
        busy = {"chain": LinkCost(40e-6, 1e-9), "shift": LinkCost(160e-6, 4e-9)}
        runtime.costs = runtime.costs.with_measured(**busy)
        # both measured schedules are slower than the nominal intra-node link alone
        links = transport_links(transport)
        assert (links.chain, links.shift) == (busy["chain"], busy["shift"])
        assert transport_links(transport) == scan_links(runtime.costs, runtime.topology)
        # the same table: the same object, so auto's memo of choices still holds
        assert transport_links(transport) is links
    finally:
        hpcrt.finalize()


@pytest.mark.mpi(ranks=[2, 3], timeout=60)
def test_auto_prices_mpis_scan_by_whether_mpi_has_the_op(comm):
    """With MPI's own op the mpi path is cheap here; with an op MPI must call back in Python (affine)
    it is dear: ``auto`` (and all_scan_choice, which says what it runs) picks accordingly."""
    import hpcrt
    from hpcrt import LinkCost
    from hpcrt.collectives import ScanOp, all_scan, all_scan_choice
    from hpcrt.collectives.comm.linkbytes import count_link_bytes
    runtime = hpcrt.init({"log_files": False})
    try:
        runtime.costs = runtime.costs.with_measured(calls={f"all_scan/{path}": LinkCost(cost, 0.0) for path, cost in (
            ("pipeline", 100e-6), ("allgather", 300e-6), ("mpi", 10e-6), ("mpi_user", 1.0))})
        x = np.full(64, comm.rank + 1.0)
        pair = (np.full(64, 0.5), np.full(64, comm.rank + 1.0))
        assert all_scan_choice(x, "sum") == ("mpi", 1)
        assert all_scan_choice(pair, "affine")[0] == "pipeline"
        assert all_scan_choice(x.astype(np.complex128), "sum")[0] == "pipeline"  # no MPI op for complex here
        pairwise = ScanOp(lambda lo, hi: lo + hi, np.zeros_like, "plain sum")  # not row-wise: one block
        assert all_scan_choice(x, pairwise, blocks=4) == ("pipeline", 1)
        # a slow chain and fast rounds: many blocks pay; a block count is priced (and named) as the
        # pipeline runs it, at most one block per row
        runtime.costs = runtime.costs.with_measured(chain=LinkCost(1e-6, 1e-8), shift=LinkCost(1e-6, 1e-10))
        wide = (np.full((64, 1), 0.5), np.ones((64, 512)))
        assert all_scan_choice(wide, "affine", blocks=1000) == ("pipeline", 64)
        with count_link_bytes() as sent:  # the pipeline sends n bytes down the chain, MPI's scan sends none
            got = all_scan(pair, "affine")
        assert sent.total() == (0 if comm.rank == comm.size - 1 else 2 * 64 * 8)
        want_a, want_b = 0.5 ** comm.rank, sum(0.5 ** (comm.rank - 1 - r) * (r + 1) for r in range(comm.rank))
        assert np.allclose(got[0], want_a) and np.allclose(got[1], want_b)
    finally:
        hpcrt.finalize()


def test_block_count_sweep_prints_the_model_choice_beside_each_measured_k(launch):
    result = launch(["-m", "hpcrt.collectives.bench", "scan-blocks", "--sizes", "4096", "65536",
                     "--blocks", "1", "4"], ranks=2, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if not line.startswith("#")]
    assert [int(row[0]) for row in lines] == [4096, 65536]
    for size, model_k, predicted, *times in lines:
        assert int(model_k) >= 1 and float(predicted) > 0 and len(times) == 2 and all(float(t) > 0 for t in times)
    assert "pipeline block" in result.stdout


@pytest.mark.mpi(ranks=[3, 4], timeout=60)
def test_affine_with_float_decay_and_integer_state(comm):
    """a float, b integer: every algorithm gives the fold computed in float and cast to b's dtype
    (values kept integral, so no rounding can differ between schedules)."""
    import hpcrt
    from hpcrt.collectives import all_scan
    hpcrt.init({"log_files": False})
    rows = 50
    xs = [(np.full((rows, 1), 2.0), np.full((rows, 1), r + 1, dtype=np.int64)) for r in range(comm.size)]
    failures = []
    for algorithm, inclusive in itertools.product(ALGORITHMS, (False, True)):
        a, b = np.ones((rows, 1)), np.zeros((rows, 1))
        for x_a, x_b in xs[:comm.rank + (1 if inclusive else 0)]:
            a, b = a * x_a, x_a * b + x_b
        got_a, got_b = all_scan(xs[comm.rank], "affine", algorithm=algorithm, inclusive=inclusive,
                                blocks=5 if algorithm == "pipeline" else None)
        if got_b.dtype != np.int64 or not (np.array_equal(got_a, a) and np.array_equal(got_b, b.astype(np.int64))):
            failures.append(f"{algorithm} inclusive={inclusive}: a {got_a[0]}, b {got_b[0]}; want {a[0]}, {b[0]}")
    assert_no_failures(comm, failures)
