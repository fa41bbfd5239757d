"""``python -m hpcrt.jobs.bench``."""

from hpcrt.jobs.bench.job import main

if __name__ == "__main__":
    main()
