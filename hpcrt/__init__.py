"""hpcrt: a Python runtime for MPI jobs on heterogeneous clusters.

The public API is what ``__all__`` lists; everything under ``hpcrt._src`` is private.
"""

from ._src.backends import ArrayBackend, backend_of, get_xp, is_device_array
from ._src.cores import share_cores
from ._src.config import ConfigError, RuntimeConfig
from ._src.cuda_aware import CudaAwareDecision
from ._src.fakegpu import FakeGpuArray, to_fake_gpu
from ._src.launcher import LaunchMismatchError
from ._src.requeue import clear_done, request_requeue, restart_count, slurm_job_id, write_stop_record
from ._src.runtime import Runtime, finalize, get_runtime, init, is_initialized
from ._src.stopping import GracefulStop, environment_deadline, signal_name
from ._src.topology import NIC, Device, LinkCost, RankInfo, Topology
from ._src.topology_file import TopologyFileError

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
