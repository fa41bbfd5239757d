"""``hpcrt.init()`` / ``hpcrt.finalize()`` and the :class:`Runtime` they manage."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from hpcrt.backends.cuda_aware import CudaAwareDecision, confirm_cuda_aware, decide_cuda_aware
from hpcrt.backends.staging import PinnedPool, Staging
from hpcrt.core.abort import USER_MISTAKES, AbortHook, prepare_agreement
from hpcrt.core.config import ConfigError, RuntimeConfig, resolve_config
from hpcrt.core.heap import heap_kept, keep_freed_memory
from hpcrt.core.launcher import LaunchInfo, check_world_matches, read_launch_env
from hpcrt.core.logs import rank_log_file, setup_logging, teardown_logging
from hpcrt.core.rundir import agree_run_dir
from hpcrt.core.ulfm import abort_world, skip_finalize_fence
from hpcrt.costmodel.table import CostTable
from hpcrt.topology.discovery import best_nic_kind, cpu_device, discover_nics, gpu_count, gpu_device
from hpcrt.topology.table import Device, RankInfo, Topology, nominal_link_costs
from hpcrt.topology.yaml_file import TopologyFileError, load_topology_file

log = logging.getLogger("hpcrt.runtime")
THREAD_LEVEL_NAMES = {0: "MPI_THREAD_SINGLE", 1: "MPI_THREAD_FUNNELED", 2: "MPI_THREAD_SERIALIZED",
                      3: "MPI_THREAD_MULTIPLE"}


@dataclass
class Runtime:
    """Everything a rank of an hpcrt job needs: its private communicator, place and device."""

    comm: Any
    """A private clone of COMM_WORLD: library traffic never matches the user's."""
    rank: int
    size: int
    local_rank: int
    """Rank inside the node (the virtual node, with a topology file)."""
    node: str
    device: Device
    xp: Any
    """numpy, or cupy when the rank runs on a GPU."""
    topology: Topology
    config: RuntimeConfig
    cuda_aware: CudaAwareDecision
    staging: Staging
    launch: LaunchInfo
    thread_level: int
    heap_kept: bool = False
    """Whether malloc keeps freed memory for reuse (``keep_freed_mb``; once set, for the process's life)."""
    costs: Optional[CostTable] = None
    """The cost model's table that ``auto`` weighs: the topology's link costs until ``calibrate()`` measures."""
    run_dir: Optional[Path] = None
    _abort_hook: Optional[AbortHook] = field(default=None, repr=False)
    _log_handlers: list = field(default_factory=list, repr=False)

    @property
    def thread_level_name(self) -> str:
        return THREAD_LEVEL_NAMES.get(self.thread_level, str(self.thread_level))


_RUNTIME: list = []


def get_runtime() -> Runtime:
    """The runtime of this process; raises if :func:`init` has not been called."""
    if not _RUNTIME:
        raise RuntimeError("hpcrt is not initialized: call hpcrt.init() first")
    return _RUNTIME[0]


def is_initialized() -> bool:
    return bool(_RUNTIME)


def init(config: RuntimeConfig | Mapping[str, Any] | None = None) -> Runtime:
    """Initialize hpcrt (and MPI, if nobody has) and return the :class:`Runtime`.

    Idempotent: a second call returns the same runtime. ``config`` is a :class:`RuntimeConfig`,
    a mapping or a Hydra node; ``HPCRT_*`` environment variables override it.
    """
    if _RUNTIME:
        return _RUNTIME[0]
    cfg = resolve_config(config)
    if cfg.keep_freed_mb:
        keep_freed_memory(cfg.keep_freed_mb << 20)
    MPI = _import_mpi(cfg.thread_level)
    world = MPI.COMM_WORLD
    prepare_agreement(world)
    launch = read_launch_env()
    check_world_matches(launch, world.size, MPI.Get_library_version())
    comm = world.Clone()
    hook = None
    if cfg.abort_on_error:
        hook = AbortHook(abort_world, f"rank {comm.rank} of {comm.size} on {socket.gethostname()}")
        hook.install()
    try:
        runtime = _start(cfg, comm, launch, MPI.Query_thread(), hook)
    except USER_MISTAKES:
        # A bad topology file or setting is raised to the caller, who says it once; no crash report.
        if hook is not None:
            hook.uninstall()
        comm.Free()
        raise
    _RUNTIME.append(runtime)
    log.debug("initialized: %s", runtime)
    return runtime


def _start(cfg: RuntimeConfig, comm: Any, launch: LaunchInfo, thread_level: int, hook: Optional[AbortHook]) -> Runtime:
    """The runtime on ``comm``: device, topology, CUDA-awareness, run directory and logs."""
    real_local_rank = _local_rank(comm, launch)
    device, xp = _select_device(cfg.device, real_local_rank)
    topology = build_topology(comm, cfg.topology_file, device, real_local_rank)
    env_set = "environment variable HPCRT_CUDA_AWARE" if "HPCRT_CUDA_AWARE" in os.environ else None
    decision = decide_cuda_aware(cfg.cuda_aware, env_set)
    decision = confirm_cuda_aware(comm, decision, device.index)  # collective: a probe's yes is tested
    staging = Staging(decision.enabled, PinnedPool(cfg.staging_pool_mb << 20))
    me = topology.ranks[comm.rank]
    runtime = Runtime(comm, comm.rank, comm.size, me.local_rank, me.node, device, xp, topology, cfg,
                      decision, staging, launch, thread_level, heap_kept(), CostTable.of(topology), _abort_hook=hook)
    if cfg.log_files or cfg.run_dir:
        runtime.run_dir = agree_run_dir(comm, cfg.run_dir)
    log_dir = runtime.run_dir / "logs" if cfg.log_files and runtime.run_dir else None
    runtime._log_handlers = setup_logging(comm.rank, comm.size, me.node, cfg.log_level, log_dir)
    if hook is not None and log_dir is not None:
        hook.log_file = rank_log_file(log_dir, comm.rank)  # a crash's report is kept with the rank's log
    return runtime


def finalize() -> None:
    """Release hpcrt's communicator, hooks and log handlers (MPI itself is finalized at exit)."""
    if not _RUNTIME:
        return
    runtime = _RUNTIME.pop()
    if runtime._abort_hook is not None:
        runtime._abort_hook.uninstall()
    teardown_logging(runtime._log_handlers)
    runtime.comm.Free()


def _import_mpi(thread_level: str) -> Any:
    """Import mpi4py's MPI, initializing it at ``thread_level`` unless something already did."""
    import mpi4py
    already = _mpi_imported()
    if not already:
        mpi4py.rc.thread_level = thread_level
        skip_finalize_fence()  # under ULFM; read by MPI_Init
    from mpi4py import MPI
    wanted = getattr(MPI, f"THREAD_{thread_level.upper()}")
    if already and MPI.Query_thread() < wanted:
        log.warning("MPI was initialized before hpcrt.init() with thread level %s, below the requested %s; "
                    "set HPCRT_THREAD_LEVEL or call hpcrt.init() before importing mpi4py.MPI",
                    THREAD_LEVEL_NAMES.get(MPI.Query_thread()), thread_level)
    return MPI


def _mpi_imported() -> bool:
    return "mpi4py.MPI" in sys.modules


def _local_rank(comm: Any, launch: LaunchInfo) -> int:
    """The rank among processes sharing this node's memory, cross-checked with the launcher's."""
    from mpi4py import MPI
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        local_rank = shared.rank
    finally:
        shared.Free()
    if launch.local_rank is not None and launch.local_rank != local_rank:
        log.warning("launcher says local rank %d but MPI's shared-memory communicator says %d; using %d",
                    launch.local_rank, local_rank, local_rank)
    return local_rank


def _select_device(choice: str, local_rank: int) -> tuple[Device, Any]:
    """GPU ``local_rank % ngpus`` when CuPy sees one and config allows, else the CPU."""
    import numpy
    ngpus = gpu_count() if choice != "cpu" else 0
    if choice == "gpu" and ngpus == 0:
        raise ConfigError("hpcrt config key 'device': 'gpu' was asked for but CuPy sees no CUDA device")
    if ngpus == 0:
        return cpu_device(), numpy
    import cupy
    index = local_rank % ngpus
    cupy.cuda.Device(index).use()
    return gpu_device(index), cupy


def build_topology(comm: Any, topology_file: Optional[str], device: Device, local_rank: int) -> Topology:
    """Gather every rank's host, device and NICs; apply the topology file when one is given."""
    host = socket.gethostname()
    rows = comm.allgather((host, local_rank, device, discover_nics()))
    hosts = [r[0] for r in rows]
    if topology_file:
        return _agreed(comm, lambda: load_topology_file(topology_file, comm.size, [r[2] for r in rows], hosts))
    ranks = tuple(RankInfo(rank, h, lr, dev, nics, best_nic_kind(nics), h)
                  for rank, (h, lr, dev, nics) in enumerate(rows))
    return Topology(ranks, nominal_link_costs())


def _agreed(comm: Any, load: Callable[[], Topology]) -> Topology:
    """``load()`` on every rank; a :class:`TopologyFileError` on any rank is raised on every rank
    (collective), naming the rank when not all found it, so that no rank goes on alone."""
    try:
        topology, error = load(), None
    except TopologyFileError as exc:
        topology, error = None, str(exc)
    errors = comm.allgather(error)
    failed = [rank for rank, text in enumerate(errors) if text is not None]
    if not failed:
        return topology
    first = errors[failed[0]]
    raise TopologyFileError(first if len(failed) == comm.size else f"on rank {failed[0]}: {first}")
