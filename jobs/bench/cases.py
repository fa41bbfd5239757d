"""The collectives the bench job knows. Each entry says how a message size maps to buffers
(nccl-tests' conventions), what every rank holds, the numpy reference, the bus-bandwidth factor,
and its algorithms: the plain MPI call (the baseline, on runtime-staged buffers) and hpcrt's,
each with the cost model's predicted time.

Inputs are small integers (and powers of two for the affine decay), so sums and products are
exact and every algorithm must match the reference to the last bit for integer dtypes and to
rounding for floats.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import numpy as np
from mpi4py import MPI

from hpcrt import Topology, backend_of, get_runtime, to_fake_gpu
from hpcrt.collectives import (all_scan, allgather, allreduce, lse_merge, predict_allscan, predict_ring,
                               reduce_scatter, ring_costs, scan_links)

MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
LSE_HEAD_DIM = 64
"""lse_merge benchmarks rows of this many values (an attention head)."""


@dataclasses.dataclass(frozen=True)
class BenchContext:
    """What an algorithm's call needs besides its operand."""

    comm: Any
    staging: Any
    buffers: str
    """numpy, cupy or fakegpu: where operands and outputs live."""
    arg_check: bool
    """Passed as ``validate=`` to hpcrt collectives (their cross-rank shape/dtype check)."""

    def to_buffer(self, host: np.ndarray) -> Any:
        if self.buffers == "fakegpu":
            return to_fake_gpu(host)
        if self.buffers == "cupy":
            import cupy
            return cupy.asarray(host)
        return host.copy()


@dataclasses.dataclass(frozen=True)
class Layout:
    """A nominal message size made concrete: the ``size`` and ``count`` columns and each rank's input."""

    nbytes: int
    count: int
    count_in: int


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One way to run a collective: ``prepare(operand, op, ctx, layout)`` returns the call to time."""

    name: str
    prepare: Callable[[tuple, Optional[str], BenchContext, Layout], Callable[[], Any]]
    predict: Callable[[int, int, Topology, Optional[str]], Optional[float]]
    """Predicted seconds for (nbytes, p, the topology with the run's measured costs, op)."""
    ops: Optional[tuple] = None
    """The ops it runs, when fewer than its collective's (MPI has no affine op)."""
    buffers: Optional[tuple] = None
    """The buffer kinds it runs on, when not all (numba takes numpy arrays only)."""
    in_place: Optional[Callable[[Any, Optional[str], BenchContext], Any]] = None
    """``in_place(buffer, op, ctx)``: the collective with its result written over ``buffer``, when the
    algorithm has an in-place form (nccl-tests' in-place columns); numpy buffers."""

    def runs(self, op: Optional[str]) -> bool:
        return self.ops is None or op in self.ops

    def runs_on(self, buffers: str) -> bool:
        return self.buffers is None or buffers in self.buffers


@dataclasses.dataclass(frozen=True)
class Collective:
    """A registry entry: one collective, its baseline and every algorithm it can run."""

    name: str
    baseline: str
    ops: tuple
    """The ops it takes; empty when it takes none."""
    algorithms: dict
    busbw_factor: Callable[[int], float]
    layout: Callable[[int, int, int], Layout]
    make_input: Callable[[int, Layout, np.dtype, Optional[str]], tuple]
    reference: Callable[[int, int, Layout, np.dtype, Optional[str]], Optional[tuple]]
    dtype_kinds: str = "fi"
    """numpy dtype kinds it takes: floats and integers, or floats only."""


# --- inputs and references -------------------------------------------------------------------

def _values(rank: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Small integers in [-5, 5], different on every rank."""
    return (((rank * 7 + np.arange(count) * 3) % 11) - 5).astype(dtype)


def _decay(rank: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Affine multipliers 1, -1 or 2: products stay exact."""
    return np.array([1, -1, 2, 1], dtype=dtype)[(rank + np.arange(count)) % 4]


def _flat_input(rank: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    return (_values(rank, layout.count_in, dtype),)


def _scan_input(rank: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    if op == "affine":
        half = layout.count_in // 2
        return _decay(rank, half, dtype), _values(rank, half, dtype)
    return _flat_input(rank, layout, dtype, op)


def _fold(op: str, p: int, layout: Layout, dtype: np.dtype) -> np.ndarray:
    total = _values(0, layout.count_in, dtype)
    for rank in range(1, p):
        UFUNCS[op](total, _values(rank, layout.count_in, dtype), out=total)
    return total


def _allreduce_reference(rank: int, p: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    return (_fold(op, p, layout, dtype),)


def _allgather_reference(rank: int, p: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    return (np.concatenate([_values(r, layout.count_in, dtype) for r in range(p)]),)


def _reduce_scatter_reference(rank: int, p: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    block = layout.count_in // p
    return (_fold(op, p, layout, dtype)[rank * block:(rank + 1) * block],)


def _scan_reference(rank: int, p: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> Optional[tuple]:
    """The exclusive scan on this rank; rank 0's is undefined for MPI_Exscan and not checked."""
    if rank == 0:
        return None
    parts = _scan_input(0, layout, dtype, op)
    for lower in range(1, rank):
        upper = _scan_input(lower, layout, dtype, op)
        if op == "affine":
            parts = (parts[0] * upper[0], upper[0] * parts[1] + upper[1])
        else:
            parts = (UFUNCS[op](parts[0], upper[0]),)
    return parts


def _lse_input(rank: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    rows = layout.count_in // LSE_HEAD_DIM
    o1 = _values(rank, layout.count_in, dtype).reshape(rows, LSE_HEAD_DIM)
    o2 = _values(rank + 1, layout.count_in, dtype).reshape(rows, LSE_HEAD_DIM)
    return o1, _values(rank + 2, rows, dtype) / 4, o2, _values(rank + 3, rows, dtype) / 4


def _lse_reference(rank: int, p: int, layout: Layout, dtype: np.dtype, op: Optional[str]) -> tuple:
    o1, l1, o2, l2 = _lse_input(rank, layout, dtype, op)
    lse = np.logaddexp(l1, l2)
    return (np.exp(l1 - lse)[:, None] * o1 + np.exp(l2 - lse)[:, None] * o2).astype(dtype), lse.astype(dtype)


# --- layouts (nccl-tests: allreduce and scans count one rank's buffer, allgather and
# reduce_scatter the whole p-rank buffer) -----------------------------------------------------

def _per_rank(nbytes: int, p: int, itemsize: int) -> Layout:
    count = max(1, nbytes // itemsize)
    return Layout(count * itemsize, count, count)


def _scan_layout(nbytes: int, p: int, itemsize: int) -> Layout:
    count = max(2, nbytes // itemsize // 2 * 2)  # the affine op splits it into (a, b) halves
    return Layout(count * itemsize, count, count)


def _allgather_layout(nbytes: int, p: int, itemsize: int) -> Layout:
    block = max(1, nbytes // itemsize // p)
    return Layout(block * p * itemsize, block * p, block)


def _reduce_scatter_layout(nbytes: int, p: int, itemsize: int) -> Layout:
    block = max(1, nbytes // itemsize // p)
    return Layout(block * p * itemsize, block * p, block * p)


def _lse_layout(nbytes: int, p: int, itemsize: int) -> Layout:
    count = max(1, nbytes // itemsize // LSE_HEAD_DIM) * LSE_HEAD_DIM
    return Layout(count * itemsize, count, count)


# --- the MPI baselines -----------------------------------------------------------------------

def _staged_mpi(method: str, out_count: Callable[[Layout, int], int],
                extra: Callable[[Layout, int], tuple] = lambda layout, p: ()) -> Callable:
    """``comm.<method>(send, recv, *extra, op)`` on staged buffers; the output is allocated once."""

    def prepare(operand: tuple, op: Optional[str], ctx: BenchContext, layout: Layout) -> Callable[[], Any]:
        (send,) = operand
        out = ctx.to_buffer(np.zeros(out_count(layout, ctx.comm.size), dtype=send.dtype))
        call = getattr(ctx.comm, method)
        args = extra(layout, ctx.comm.size) + ((MPI_OPS[op],) if op else ())

        def run() -> Any:
            with ctx.staging.readable(send) as sbuf, ctx.staging.writable(out) as rbuf:
                call(sbuf, rbuf, *args)
            return out

        return run

    return prepare


# --- hpcrt's algorithms ---------------------------------------------------------------------

def _collective_input(operand: tuple, op: Optional[str]) -> Any:
    """What an hpcrt collective takes of the bench's operand: the pair for affine, else the array."""
    return operand if op == "affine" else operand[0]


def _hpcrt_call(function: Callable, name: str, takes_op: bool) -> Callable:
    def prepare(operand: tuple, op: Optional[str], ctx: BenchContext, layout: Layout) -> Callable[[], Any]:
        x = _collective_input(operand, op)
        args = (x, op) if takes_op else (x,)
        return lambda: function(*args, algorithm=name, validate=ctx.arg_check)
    return prepare


def _lse_call(kernel: str) -> Callable:
    def prepare(operand: tuple, op: Optional[str], ctx: BenchContext, layout: Layout) -> Callable[[], Any]:
        o1, l1 = operand[0], operand[1]
        out = (backend_of(o1).xp.empty_like(o1), backend_of(l1).xp.empty_like(l1))
        return lambda: lse_merge(*operand, out=out, kernel=kernel)
    return prepare


def _no_prediction(nbytes: int, p: int, topology: Topology, op: Optional[str]) -> Optional[float]:
    return None


def _ring_predictor(collective: str, algorithm: str) -> Callable[[int, int, Topology, Optional[str]], float]:
    """The ring collectives' model over all ranks at the runtime's cost table, as ``auto`` sees it:
    the ring's slowest link and the measured step costs."""
    return lambda nbytes, p, topology, op: predict_ring(collective, algorithm, nbytes, p,
                                                        ring_costs(get_runtime().costs, topology))


def _scan_predictor(algorithm: str, hpcrt_calls: bool = True) -> Callable[[int, int, Topology, Optional[str]], float]:
    """The All-Scan model at the runtime's cost table for all ranks, as ``auto`` sees it; without
    ``hpcrt_calls`` the messages alone (MPI's own call, which pays none of hpcrt's work)."""
    def predict(nbytes: int, p: int, topology: Topology, op: Optional[str]) -> float:
        links = scan_links(get_runtime().costs, topology)
        links = links if hpcrt_calls else dataclasses.replace(links, calls=())
        return predict_allscan(algorithm, nbytes, p, links, builtin_op=op in MPI_OPS)
    return predict


RING_ALGORITHMS = ("mpi", "ring", "bidir_ring")
SCAN_ALGORITHMS = ("mpi", "pipeline", "allgather", "ring")


def _hpcrt_algorithms(function: Callable, names: tuple, predictor: Callable[[str], Callable],
                      takes_op: bool) -> dict:
    """Each named algorithm of an hpcrt collective, and ``auto`` predicted as the cheapest of them
    (what it ran, the run takes from the calls: :func:`hpcrt.collectives.costmodel.memo.auto_ran`)."""
    found = {name: Algorithm(name, _hpcrt_call(function, name, takes_op), predictor(name)) for name in names}
    found["auto"] = Algorithm("auto", _hpcrt_call(function, "auto", takes_op),
                              lambda nbytes, p, topology, op: min(predictor(a)(nbytes, p, topology, op) for a in names))
    return found


def _ring_algorithms(collective: str, function: Callable, baseline: Callable) -> dict:
    predictor = functools.partial(_ring_predictor, collective)
    return {"mpi4py": Algorithm("mpi4py", baseline, predictor("mpi")),
            **_hpcrt_algorithms(function, RING_ALGORITHMS, predictor, collective != "allgather")}


def _with_in_place(algorithms: dict) -> dict:
    """allreduce's in-place forms: ``MPI_IN_PLACE`` for MPI's own call, ``out=`` the input for hpcrt's."""
    def mpi(buffer: Any, op: Optional[str], ctx: BenchContext) -> Any:
        ctx.comm.Allreduce(MPI.IN_PLACE, buffer, MPI_OPS[op])
        return buffer

    def hpcrt_form(name: str) -> Callable:
        return lambda buffer, op, ctx: allreduce(buffer, op, algorithm=name, validate=ctx.arg_check, out=buffer)

    return {name: dataclasses.replace(a, in_place=mpi if name == "mpi4py" else hpcrt_form(name))
            for name, a in algorithms.items()}


def _scan_algorithms() -> dict:
    baseline = _staged_mpi("Exscan", lambda layout, p: layout.count_in)
    return {"mpi4py": Algorithm("mpi4py", baseline, _scan_predictor("mpi", hpcrt_calls=False), ops=tuple(MPI_OPS)),
            **_hpcrt_algorithms(all_scan, SCAN_ALGORITHMS, _scan_predictor, True)}


def _lse_algorithms() -> dict:
    """numpy (the baseline expression), the fused numba (numpy buffers) and CuPy (cupy) kernels."""
    return {kernel: Algorithm(kernel, _lse_call(kernel), _no_prediction, buffers=buffers)
            for kernel, buffers in (("numpy", None), ("numba", ("numpy",)), ("cupy", ("cupy",)), ("auto", None))}


REDUCE_OPS = ("sum", "max", "min")
COLLECTIVES = {c.name: c for c in (
    Collective("allreduce", "mpi4py", REDUCE_OPS,
               _with_in_place(_ring_algorithms("allreduce", allreduce,
                                               _staged_mpi("Allreduce", lambda layout, p: layout.count_in))),
               lambda p: 2 * (p - 1) / p, _per_rank, _flat_input, _allreduce_reference),
    Collective("allgather", "mpi4py", (),
               _ring_algorithms("allgather", allgather, _staged_mpi("Allgather", lambda layout, p: layout.count)),
               lambda p: (p - 1) / p, _allgather_layout, _flat_input, _allgather_reference),
    Collective("reduce_scatter", "mpi4py", REDUCE_OPS,
               _ring_algorithms("reduce_scatter", reduce_scatter,
                                _staged_mpi("Reduce_scatter", lambda layout, p: layout.count // p,
                                            lambda layout, p: ([layout.count // p] * p,))),
               lambda p: (p - 1) / p, _reduce_scatter_layout, _flat_input, _reduce_scatter_reference),
    Collective("all_scan", "mpi4py", ("sum", "max", "affine"), _scan_algorithms(),
               lambda p: 1.0, _scan_layout, _scan_input, _scan_reference),
    Collective("lse_merge", "numpy", (), _lse_algorithms(),
               lambda p: 3.0, _lse_layout, _lse_input, _lse_reference, dtype_kinds="f"),
)}
"""busbw factors: allreduce 2(p−1)/p, allgather and reduce_scatter (p−1)/p (nccl-tests); all_scan 1
(a scan moves at least its n bytes once: busbw = algbw = n/t, comparable with the link);
lse_merge 3 (a local kernel: reads two outputs and writes one, so busbw is memory traffic)."""

KNOWN_OPS = tuple(dict.fromkeys(op for c in COLLECTIVES.values() for op in c.ops))
DEFAULT_EXCLUDED = ("auto",)
"""``all`` means every available algorithm but ``auto`` (which runs one of the others)."""
