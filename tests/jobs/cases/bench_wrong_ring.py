"""The bench job with a broken allreduce ring (rank 1 adds 1 to every element of its result), so
tests can check that validation counts the wrong elements and fails the job after writing."""

import dataclasses

from hpcrt.jobs.bench import cases as bench_cases
from hpcrt.jobs.bench import job as bench
from hpcrt.jobs.hydra_mpi import mpi_hydra_main

RING = bench_cases.COLLECTIVES["allreduce"].algorithms["ring"]


def off_by_one_on_rank_one(operand, op, ctx, layout):
    call = RING.prepare(operand, op, ctx, layout)
    return lambda: call() + (ctx.comm.rank == 1)


bench_cases.COLLECTIVES["allreduce"].algorithms["ring"] = dataclasses.replace(RING, prepare=off_by_one_on_rank_one)

if __name__ == "__main__":
    mpi_hydra_main("bench", "bench", bench.run)
