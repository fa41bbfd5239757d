"""``mpiexec -n 4 python -m hpcrt.jobs.train [key=value ...]``: see :mod:`hpcrt.jobs.train`."""

from hpcrt.jobs.hydra_mpi import mpi_hydra_main
from hpcrt.jobs.train.job import run

if __name__ == "__main__":
    mpi_hydra_main("train", "train", run)
