"""``python -m hpcrt.jobs.bench``."""

from hpcrt.jobs.bench.job import main

main()
