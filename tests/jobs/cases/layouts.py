"""Train a tiny float64 model for a few steps on every dp × sp layout, ZeRO level and scan
algorithm this rank count allows, in one MPI job; rank 0 writes each run's per-step losses and
final parameters to OUT, for the test to compare with the single-rank run.

    mpiexec -n N python layouts.py OUT [TOPOLOGY]
"""

import json
import sys
from pathlib import Path

import numpy as np

import hpcrt
from hpcrt.jobs.train.config import parse_settings
from hpcrt.jobs.train.data import make_source
from hpcrt.jobs.train.job import train

MODEL = {"vocab": 11, "d_model": 8, "heads": 2, "d_k": 3, "d_v": 2, "layers": 2, "d_ff": 12, "dtype": "float64"}
TRAIN = {"steps": 3, "batch": 5, "seq_len": 9, "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "seed": 3,
         "log_every": 10, "resume": "never", "monitor": False}
SCANS = ("pipeline", "allgather", "ring")


def runs(world: int) -> list:
    """(sp, zero, scan, allreduce): every ZeRO level on every layout, every scan on every layout
    with sp > 1, and the rings' gradient allreduce at full dp."""
    layouts = [sp for sp in range(1, world + 1) if world % sp == 0]
    found = [(sp, zero, "pipeline", "auto") for sp in layouts for zero in ("none", "flat", "hpz", "3level")]
    found += [(sp, "none", scan, "auto") for sp in layouts if sp > 1 for scan in SCANS if scan != "pipeline"]
    return found + [(1, "none", "pipeline", ring) for ring in ("ring", "bidir_ring")]


def main() -> None:
    out = Path(sys.argv[1])
    runtime = hpcrt.init({"topology_file": sys.argv[2]} if len(sys.argv) > 2 else {})
    results = {}
    for sp, zero, scan, allreduce in runs(runtime.size) if runtime.size > 1 else [(1, "none", "pipeline", "auto")]:
        if zero == "3level" and runtime.size < 4:
            continue  # three levels need groups inside nodes: the 4-rank topology has them
        name = f"sp{sp}-{zero}-{scan}-{allreduce}"
        config = {"model": MODEL, "train": TRAIN, "data": {"kind": "markov", "branching": 3, "chain_seed": 5},
                  "parallel": {"sp": sp, "scan": scan, "zero": zero, "allreduce": allreduce},
                  "checkpoint": {"every": 0, "keep": 1, "blocking": False},
                  "stop": {"signals": [], "max_minutes": 0, "grace_s": 0}, "slurm": {"max_requeues": 0}}
        settings = parse_settings(config, runtime.size)
        source = make_source(settings.data, MODEL["vocab"], TRAIN["seq_len"])
        result = train(settings, source, out / name, report=False)
        if runtime.rank == 0:
            np.save(out / f"{name}.npy", result.params)
            results[name] = [row["loss"] for row in result.rows]
    if runtime.rank == 0:
        (out / "losses.json").write_text(json.dumps(results))
    hpcrt.finalize()


if __name__ == "__main__":
    main()
