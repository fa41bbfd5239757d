"""hpcrt.jobs: Hydra applications — ``train`` (the GLA language model on dp × sp ranks, the main
job), ``bench`` (collective microbenchmarks) — ``make_tokens`` for the train job's token files, and
:func:`main`, the kit for writing one's own Hydra job on hpcrt (see docs/examples/)."""

from hpcrt.jobs.hydra_mpi import main

__all__ = ["main"]
