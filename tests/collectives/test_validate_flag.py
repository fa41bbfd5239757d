"""``validate=False`` skips the cross-rank agreement check and nothing else: ranks that disagree on
the op are caught with it and go through unnoticed without it (each rank folding with its own op)."""

import numpy as np
import pytest

import hpcrt
from hpcrt.collectives import CollectiveMismatchError, allreduce, block_bounds


@pytest.mark.mpi(ranks=[2], timeout=60)
def test_disagreeing_ops_are_caught_only_with_validate(comm):
    hpcrt.init({"log_files": False})
    try:
        x = [np.arange(6.0), np.arange(6.0) * 2 - 2]
        op = "sum" if comm.rank == 0 else "max"
        with pytest.raises(CollectiveMismatchError, match="ranks disagree on op: rank 0 has 'sum', rank 1 has 'max'"):
            allreduce(x[comm.rank], op=op, algorithm="ring", comm=comm)
        got = allreduce(x[comm.rank], op=op, algorithm="ring", comm=comm, validate=False)
        # the ring's reduce-scatter leaves piece r to rank r, which folds it with its own op
        (a, b), (c, d) = block_bounds(6, 2)
        np.testing.assert_array_equal(got, np.concatenate([(x[0] + x[1])[a:b], np.maximum(x[0], x[1])[c:d]]))
    finally:
        hpcrt.finalize()
