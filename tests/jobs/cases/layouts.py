"""Train a tiny float64 model for a few steps on every dp × sp layout, ZeRO level and scan
algorithm this rank count allows, on every layout with uneven (static, weighted) shares, and with
the odd ranks on the fake GPU among numpy ranks, in one MPI job; rank 0 writes each run's per-step
losses and final parameters to OUT, for the test to compare with the single-rank run.

    mpiexec -n N python layouts.py OUT [TOPOLOGY]
"""

import json
import sys
from pathlib import Path

import numpy as np

import hpcrt
from hpcrt.backends.fakegpu import fakecupy
from hpcrt.jobs.train.config import parse_settings
from hpcrt.jobs.train.data import make_source
from hpcrt.jobs.train.job import train

MODEL = {"vocab": 11, "d_model": 8, "heads": 2, "d_k": 3, "d_v": 2, "layers": 2, "d_ff": 12, "dtype": "float64"}
TRAIN = {"steps": 3, "batch": 5, "seq_len": 9, "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "seed": 3,
         "log_every": 10, "resume": "never", "monitor": False}
SCANS = ("pipeline", "allgather", "ring")
UNEVEN = [1.0, 3.0, 2.0, 5.0]
"""Static weights of the ``-uneven`` runs (the first ``world`` of them)."""
BALANCE = {"balance": "none", "weights": None, "gpu_weight": 4.0, "rebalance_every": 25,
           "rebalance_threshold": 0.25, "rebalance_max_factor": 2.0}


def runs(world: int) -> list:
    """(sp, zero, scan, allreduce, uneven): every ZeRO level on every layout, every scan on every
    layout with sp > 1, the rings' gradient allreduce at full dp, and uneven shares on every layout
    (with zero=none, the odd ranks' model on the fake GPU)."""
    layouts = [sp for sp in range(1, world + 1) if world % sp == 0]
    found = [(sp, zero, "pipeline", "auto", False) for sp in layouts for zero in ("none", "flat", "hpz", "3level")]
    found += [(sp, "none", scan, "auto", False) for sp in layouts if sp > 1 for scan in SCANS if scan != "pipeline"]
    found += [(sp, zero, "pipeline", "auto", True) for sp in layouts for zero in ("none", "flat")]
    return found + [(1, "none", "pipeline", ring, False) for ring in ("ring", "bidir_ring")]


def main() -> None:
    out = Path(sys.argv[1])
    runtime = hpcrt.init({"topology_file": sys.argv[2]} if len(sys.argv) > 2 else {})
    results, own_xp = {}, runtime.xp
    single = [(1, "none", "pipeline", "auto", False)]
    for sp, zero, scan, allreduce, uneven in runs(runtime.size) if runtime.size > 1 else single:
        if zero == "3level" and runtime.size < 4:
            continue  # three levels need groups inside nodes: the 4-rank topology has them
        name = f"sp{sp}-{zero}-{scan}-{allreduce}" + ("-uneven" if uneven else "")
        balance = {"balance": "static", "weights": UNEVEN[:runtime.size]} if uneven else {}
        runtime.xp = fakecupy if uneven and zero == "none" and runtime.rank % 2 else own_xp
        config = {"model": MODEL, "train": TRAIN, "data": {"kind": "markov", "branching": 3, "chain_seed": 5},
                  "parallel": {"sp": sp, "scan": scan, "zero": zero, "allreduce": allreduce, **BALANCE, **balance},
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
