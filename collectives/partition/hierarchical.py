"""Hierarchical ZeRO-style partitioning of a flat parameter buffer (ZeRO-3, ZeRO++ hpZ, the
Frontier 3-level scheme) with level-wise ring reduce-scatter and all-gather.

Each rank owns a primary shard (its optimizer state) and, with two or more levels, a secondary
shard shared inside its node group (hpZ), so the backward all-gather never leaves the node. All
traffic goes through :class:`Transport` on one sub-communicator per stage, so bytes are recorded
per link and link emulation applies. Shard layout and formulas: :mod:`.partition_plan`,
:mod:`.partition_cost`.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from hpcrt.backends.arrays import get_xp
from hpcrt.core.runtime import get_runtime

from hpcrt.collectives.comm.agreement import CollectiveMismatchError, check_agreement
from hpcrt.collectives.comm.reduce_ops import AVERAGING_OPS, check_op, combine_into
from hpcrt.collectives.comm.transport import Transport, _world_ranks, intracomm
from hpcrt.collectives.partition.levels import LevelSpec
from hpcrt.collectives.partition.plan import PartitionPlan, Weights, make_plan
from hpcrt.collectives.rings.engine import ring_lanes, ring_pass


class HierarchicalPartition:
    """A flat buffer of ``numel`` elements of ``dtype`` partitioned over ``comm`` (default: the
    runtime's) along ``levels`` ("flat", "hpz", "3level", or level names / rank lists, innermost
    first), with shard sizes proportional to ``weights`` (None, "memory" or one number per rank).

    Collective to create (every rank, same arguments) and to :meth:`free`; each instance has
    its own communicators, so any number can be created, used and freed in turn.
    """

    def __init__(self, numel: int, *, levels: LevelSpec = "hpz", weights: Weights = None,
                 comm: Optional[Any] = None, dtype: Any = "float32", validate: bool = True):
        runtime = get_runtime()
        self.comm = intracomm(comm, "HierarchicalPartition")
        self.dtype = np.dtype(dtype)
        self.validate = validate
        weight_key = repr(weights if weights is None or isinstance(weights, str) else list(weights))
        check_agreement(self.comm, "HierarchicalPartition", numel=numel, levels=repr(levels),
                        weights=weight_key, dtype=str(self.dtype))
        self.plan: PartitionPlan = make_plan(runtime.topology, numel, levels, weights, _world_ranks(self.comm))
        self.rank = self.comm.rank
        self._transports: list = []
        for stage, groups in enumerate(self.plan.stages):
            peers = self.plan.peers(self.rank, stage)
            self._transports.append(Transport(self.comm.Split(groups.index(peers), peers.index(self.rank))))

    @property
    def numel(self) -> int:
        """Elements of the whole flat buffer."""
        return self.plan.numel

    @property
    def primary(self) -> slice:
        """This rank's primary shard of the flat buffer."""
        return slice(*self.plan.bounds[self.rank])

    @property
    def secondary(self) -> Optional[slice]:
        """This rank's secondary (hpZ) shard, or None with a single level."""
        bounds = self.plan.secondary(self.rank)
        return None if bounds is None else slice(*bounds)

    def reduce_scatter_grads(self, full_grad: Any, op: str = "sum", *, inplace: bool = False) -> Any:
        """This rank's primary shard of the element-wise ``op`` (sum, max, min, or avg: the sum over
        the rank count, for float dtypes) of every rank's ``full_grad``, reduced level by level
        (inside the innermost group first, then among peers outward). Ranks that differ in ``op``
        all raise.

        ``inplace`` reduces inside ``full_grad`` (C-contiguous; its contents are clobbered) instead
        of a copy of it.
        """
        self._check("reduce_scatter_grads", full_grad, self.numel, full_grad if inplace else None, self.numel,
                    op=op)
        averaging = op in AVERAGING_OPS
        if averaging and self.dtype.kind not in "fc":
            raise TypeError(f"reduce_scatter_grads: op 'avg' needs a floating dtype, the partition holds {self.dtype}")
        if not averaging:
            check_op(op)
        work = full_grad.reshape(-1) if inplace else full_grad.reshape(-1).copy()
        for stage in range(self.plan.depth):
            self._ring(work, stage, combine_into(op))
        shard = work[self.primary].copy()
        if averaging:
            shard /= self.comm.size
        return shard

    def allgather_params(self, primary: Any, *, out: Optional[Any] = None) -> Any:
        """The full buffer from every rank's primary shard (outermost level first).

        ``out`` (every gather): a C-contiguous array of the result's size to write into and
        return, e.g. a persistent parameter buffer.
        """
        return self._gather("allgather_params", primary, self.primary, self.plan.depth, 0, out)

    def refresh_secondary(self, primary: Any, *, out: Optional[Any] = None) -> Any:
        """This rank's secondary shard from the primaries (the outermost stage only; once per step)."""
        self._require_secondary()
        return self._gather("refresh_secondary", primary, self.primary, self.plan.depth, self.plan.depth - 1, out)

    def allgather_secondary(self, secondary: Any, *, out: Optional[Any] = None) -> Any:
        """The full buffer from the secondary shards, inside the node group only."""
        self._require_secondary()
        return self._gather("allgather_secondary", secondary, self.secondary, self.plan.depth - 1, 0, out)

    def free(self) -> None:
        """Release this partition's communicators (collective)."""
        for transport in self._transports:
            transport.comm.Free()
        self._transports = []

    def __enter__(self) -> "HierarchicalPartition":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()

    def _gather(self, name: str, shard: Any, place: slice, depth: int, stop: int, out: Optional[Any]) -> Any:
        """All-gather stages depth−1 down to ``stop``, from ``shard`` at ``place`` to this rank's
        depth-``stop`` chunk (the full buffer for ``stop`` = 0), in ``out`` when given."""
        base, end = self.plan.chunk(self.rank, stop)
        self._check(name, shard, place.stop - place.start, out, end - base)
        work = get_xp(shard).empty(end - base, dtype=self.dtype) if out is None else out.reshape(-1)
        work[place.start - base:place.stop - base] = shard.reshape(-1)
        for stage in range(depth - 1, stop - 1, -1):
            self._ring(work, stage, None, base)
        return work if out is None else out

    def _ring(self, work: Any, stage: int, combine: Any, base: int = 0) -> None:
        """One stage's ring over this rank's chunk of it; ``work`` holds the buffer from ``base`` on."""
        if not self._transports:
            raise RuntimeError("this HierarchicalPartition has been freed")
        start, stop = self.plan.chunk(self.rank, stage)
        blocks = [(a - start, b - start) for a, b in self.plan.blocks(self.rank, stage)]
        if len(blocks) > 1 and stop > start:
            ring_pass(self._transports[stage], work[start - base:stop - base], ring_lanes(blocks, "ring"),
                      combine=combine)

    def _require_secondary(self) -> None:
        if self.secondary is None:
            raise ValueError(f"a partition with one level ({self.plan.level_names[0]}) has no secondary shard: "
                             "gather from the primary with allgather_params")

    def _check(self, name: str, x: Any, expected: int, out: Optional[Any] = None, out_size: int = 0,
               **agreed: Any) -> None:
        """Every rank raises if any rank's input (or ``out``, or in-place buffer) has the wrong
        size, dtype or layout, or if the ranks differ in any of ``agreed`` (no deadlock)."""
        problem = ""
        if x.size != expected or np.dtype(x.dtype) != self.dtype:
            problem = f"{x.size} elements of {x.dtype}, expected {expected} of {self.dtype}"
        elif out is not None and (out.size != out_size or np.dtype(out.dtype) != self.dtype
                                  or not out.flags.c_contiguous):
            problem = f"a buffer of {out.size} elements of {out.dtype} to write into, expected a C-contiguous " \
                      f"one of {out_size} of {self.dtype}"
        if self.validate:
            check_agreement(self.comm, name, input=problem or "ok", **agreed)
        if problem:
            raise CollectiveMismatchError(f"{name}: rank {self.rank} got {problem}")
