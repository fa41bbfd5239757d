"""HierarchicalPartition.reduce_scatter_grads with every reduction op it takes, against numpy, with
``inplace=False`` leaving the caller's gradient as it was, and ranks that differ in op all raising."""

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import CollectiveMismatchError, HierarchicalPartition

TOPOLOGY = """
nodes:
  - {name: n0, ranks: 2, nic: {class: ib}, groups: [[0], [1]]}
  - {name: n1, ranks: 2, nic: {class: ib}, groups: [[2], [3]]}
links:
  intra: {alpha_us: 1, bandwidth_gbytes_s: 100}
  ib: {alpha_us: 2, bandwidth_gbytes_s: 10}
emulate: false
"""
"""Two nodes of two ranks, one rank per group: flat, hpZ and 3-level plans at four ranks."""

REFERENCES = {"sum": np.sum, "max": np.max, "min": np.min}


def _grads(p: int, numel: int) -> list:
    """Per-rank gradients whose sum, max and min differ everywhere (signed, rank-dependent)."""
    return [(((np.arange(numel) * (r + 3)) % 11) - 5.0 + 0.25 * r) for r in range(p)]


@pytest.fixture
def runtime(comm, mpi_tmp_path):
    path = mpi_tmp_path / "topology.yaml"
    if comm.rank == 0:
        path.write_text(TOPOLOGY if comm.size == 4 else TOPOLOGY.replace("ranks: 2", "ranks: 1")
                        .replace("[[0], [1]]", "[[0]]").replace("[[2], [3]]", "[[1]]"))
    comm.Barrier()
    rt = hpcrt.init({"topology_file": str(path), "log_files": False})
    yield rt
    hpcrt.finalize()


@pytest.mark.mpi(ranks=[2, 4], timeout=120)
def test_every_op_matches_numpy_and_leaves_the_input_intact(comm, runtime):
    numel = 37
    grads = _grads(comm.size, numel)
    for levels in ("flat", "hpz", "3level"):
        for weights in (None, [r + 1 for r in range(comm.size)]):
            with HierarchicalPartition(numel, levels=levels, weights=weights, dtype="float64") as part:
                for op, reference in REFERENCES.items():
                    expected = reference(grads, axis=0)[part.primary]
                    mine = grads[comm.rank].copy()
                    shard = part.reduce_scatter_grads(mine, op)
                    np.testing.assert_array_equal(shard, expected, err_msg=f"{op} {levels} {weights}")
                    np.testing.assert_array_equal(mine, grads[comm.rank], err_msg=f"inplace=False {op} {levels}")
                    in_place = part.reduce_scatter_grads(mine, op, inplace=True)
                    np.testing.assert_array_equal(in_place, expected, err_msg=f"inplace=True {op} {levels}")


@pytest.mark.mpi(ranks=[2, 4], timeout=60)
def test_avg_is_the_mean_and_integers_are_refused(comm, runtime):
    grads = _grads(comm.size, 13)
    with HierarchicalPartition(13, levels="hpz", dtype="float64") as part:
        shard = part.reduce_scatter_grads(grads[comm.rank].copy(), "avg")
        np.testing.assert_allclose(shard, np.mean(grads, axis=0)[part.primary], rtol=1e-15)
    with HierarchicalPartition(8, levels="flat", dtype="int64") as part:
        with pytest.raises(TypeError, match="op 'avg' needs a floating dtype"):
            part.reduce_scatter_grads(np.ones(8, dtype=np.int64), "avg")


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_ranks_that_differ_in_op_all_raise(comm, runtime):
    with HierarchicalPartition(8, levels="flat", dtype="float64") as part:
        with pytest.raises(CollectiveMismatchError, match="ranks disagree on op: rank 0 has 'sum', rank 1 has 'max'"):
            part.reduce_scatter_grads(np.ones(8), "sum" if comm.rank == 0 else "max")
        with pytest.raises(ValueError, match="unknown reduction op 'mean'; expected one of sum, max, min"):
            part.reduce_scatter_grads(np.ones(8), "mean")
