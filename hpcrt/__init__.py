"""hpcrt: a Python runtime for MPI jobs on heterogeneous clusters.

The public API is what ``__all__`` lists, plus :mod:`hpcrt.monitor`; the subpackages ``core``,
``topology``, ``backends`` and ``costmodel`` are the implementation, laid out in docs/ARCHITECTURE.md.
"""

from hpcrt.backends.arrays import ArrayBackend, backend_of, get_xp, is_device_array
from hpcrt.backends.cuda_aware import CudaAwareDecision
from hpcrt.backends.fakegpu import FakeGpuArray, to_fake_gpu
from hpcrt.core.config import ConfigError, RuntimeConfig
from hpcrt.core.cores import share_cores
from hpcrt.core.launcher import LaunchMismatchError
from hpcrt.core.requeue import clear_done, request_requeue, restart_count, slurm_job_id, write_stop_record
from hpcrt.core.runtime import Runtime, finalize, get_runtime, init, is_initialized
from hpcrt.core.stopping import GracefulStop, environment_deadline, signal_name
from hpcrt.topology.table import NIC, Device, LinkCost, RankInfo, Topology
from hpcrt.topology.yaml_file import TopologyFileError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "init",
    "finalize",
    "get_runtime",
    "is_initialized",
    "Runtime",
    "RuntimeConfig",
    "ConfigError",
    "LaunchMismatchError",
    "Topology",
    "TopologyFileError",
    "RankInfo",
    "Device",
    "NIC",
    "LinkCost",
    "CudaAwareDecision",
    "ArrayBackend",
    "backend_of",
    "get_xp",
    "is_device_array",
    "FakeGpuArray",
    "to_fake_gpu",
    "GracefulStop",
    "signal_name",
    "environment_deadline",
    "request_requeue",
    "write_stop_record",
    "clear_done",
    "restart_count",
    "slurm_job_id",
    "share_cores",
]
