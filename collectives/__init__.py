"""hpcrt.collectives: custom collectives (All-Scan, rings, hierarchical partitioning, NIC-aware groups).

NaN semantics: ``max`` and ``min`` propagate NaN as numpy's maximum/minimum do, on every algorithm
(``ring``, ``bidir_ring``, ``mpi``, ``auto``; All-Scan's ``pipeline``, ``allgather``, ``ring``,
``mpi``): an element is NaN wherever any rank it reduces over holds NaN there, the same on every
rank. MPI's own max/min do not promise that, so the ``mpi`` paths add a one-element NaN flag (the
rings) or send floats as order-preserving integers (All-Scan).

Every collective takes an intracommunicator only (an intercommunicator is refused with a
TypeError), and a user All-Scan op that raises on one rank raises on every rank: that rank gets its
own error, the others a RuntimeError naming it.
"""

from hpcrt.collectives.allscan.entry import AllScanHandle, all_scan, all_scan_choice, all_scan_start
from hpcrt.collectives.allscan.ops import ScanOp, flipped
from hpcrt.collectives.attention.gla import gla_backward, gla_forward
from hpcrt.collectives.attention.lse_merge import lse_merge
from hpcrt.collectives.attention.ring import ring_attention
from hpcrt.collectives.attention.token_ring import token_ring_attention
from hpcrt.collectives.comm.agreement import CollectiveMismatchError
from hpcrt.collectives.comm.blocks import block_bounds
from hpcrt.collectives.comm.linkbytes import count_link_bytes
from hpcrt.collectives.costmodel.allscan import ScanLinks, best_blocks, predict_allscan, scan_links
from hpcrt.collectives.costmodel.calibration import calibrate
from hpcrt.collectives.costmodel.groups import CommSizes, GroupCost, score_placement
from hpcrt.collectives.costmodel.partition import inter_node_bytes, predict_step, step_link_bytes
from hpcrt.collectives.costmodel.rings import RingCosts, predict_ring, ring_costs
from hpcrt.collectives.groups.nic import GroupPlan, ProcessGroups, make_groups, plan_groups
from hpcrt.collectives.partition.bench import run_partition_benchmark
from hpcrt.collectives.partition.hierarchical import HierarchicalPartition
from hpcrt.collectives.partition.levels import PartitionLevelError
from hpcrt.collectives.partition.plan import PartitionPlan, make_plan
from hpcrt.collectives.rings.entry import allgather, allreduce, reduce_scatter, ring_choice

__all__: list = []
__all__ += ["calibrate", "allreduce", "allgather", "reduce_scatter", "ring_choice", "block_bounds"]
__all__ += ["predict_ring", "ring_costs", "RingCosts", "ring_attention", "token_ring_attention", "lse_merge",
            "count_link_bytes", "CollectiveMismatchError"]
__all__ += ["all_scan", "all_scan_start", "all_scan_choice", "AllScanHandle", "ScanOp", "flipped", "predict_allscan",
            "best_blocks", "ScanLinks", "scan_links", "gla_forward", "gla_backward"]
__all__ += ["HierarchicalPartition", "PartitionPlan", "PartitionLevelError", "make_plan", "predict_step",
            "step_link_bytes", "inter_node_bytes", "run_partition_benchmark"]
__all__ += ["make_groups", "plan_groups", "ProcessGroups", "GroupPlan", "CommSizes", "GroupCost", "score_placement"]
