"""hpcrt.jobs: Hydra applications (collective microbenchmarks, a training-like workload)."""

__all__: list = []
