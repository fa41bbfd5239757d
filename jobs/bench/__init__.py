"""``python -m hpcrt.jobs.bench``: the collective microbenchmark job."""
