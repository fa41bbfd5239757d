"""A job of one's own on hpcrt: a Hydra app whose ranks share one run directory, with the runtime
initialized from its config, user mistakes said in one line and crashes aborting the whole job.

    mpiexec -n 2 python docs/examples/allreduce_job.py example.count=4096

Every rank contributes ``rank + 1`` in each of ``example.count`` elements; rank 0 writes the sum to
``result.json`` in the run directory (``hpcrt-runs/allreduce_job/<job id or date-time>``).
"""

import json

import numpy as np
from omegaconf import DictConfig

import hpcrt
import hpcrt.jobs
from hpcrt.collectives import allreduce


@hpcrt.jobs.main(config_path="conf", config_name="allreduce_job")
def main(cfg: DictConfig) -> None:
    """Check the settings (a bad one is a :class:`hpcrt.ConfigError`, said once), then sum across ranks."""
    count = cfg.example.count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise hpcrt.ConfigError(f"example config key 'count': expected an integer >= 1, got {count!r}")
    runtime = hpcrt.get_runtime()
    total = allreduce(np.full(count, runtime.rank + 1.0), "sum", comm=runtime.comm, algorithm=cfg.example.algorithm)
    if runtime.rank == 0:
        result = {"ranks": runtime.size, "count": count, "first": float(total[0]), "last": float(total[-1])}
        (runtime.run_dir / "result.json").write_text(json.dumps(result))
        print(f"sum over {runtime.size} ranks: {result['first']} in each of {count} elements; "
              f"run directory {runtime.run_dir}", flush=True)


if __name__ == "__main__":
    main()
