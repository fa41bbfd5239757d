"""A training-like loop under the monitor, for the fault tests: a "compute" section sleeping
N(ms, sd) per step, then an Allreduce traced through the core hook, then ``monitor.step()``.
Monitor settings and faults come from HPCRT_MONITOR_* and HPCRT_FAULT."""

import argparse
import random
import time

import numpy as np

import hpcrt
from hpcrt import monitor
from hpcrt.core.trace_hook import trace_collective, trace_done

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", required=True)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--ms", type=float, default=10.0)
parser.add_argument("--sd", type=float, default=3.0)
parser.add_argument("--ulfm", action="store_true", help="shrink and go on when a rank dies")
args = parser.parse_args()

rt = hpcrt.init({"log_files": False, "run_dir": args.run_dir})
mon = monitor.start()
mon.on("straggler", lambda e: print(f"CALLBACK straggler rank {e['rank']} seen by rank {rt.rank}", flush=True))
from mpi4py import MPI  # noqa: E402 (hpcrt.init chose the thread level)

comm = rt.comm
rng = random.Random(1000 + rt.rank)
buf = np.ones(1024)
step = 0
while step < args.steps:
    try:
        with monitor.section("compute"):
            time.sleep(max(0.0, rng.gauss(args.ms, args.sd)) / 1e3)
        token = trace_collective("allreduce", comm, buf.nbytes)
        try:
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
        finally:
            trace_done(token)
        monitor.step()
    except MPI.Exception:
        if not args.ulfm:
            raise
        comm = mon.recover(comm)
    step += 1
print(f"rank {rt.rank} finished {args.steps} steps with {comm.size} ranks", flush=True)
monitor.stop()
hpcrt.finalize()
