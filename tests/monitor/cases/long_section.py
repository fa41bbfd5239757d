"""A 2-rank job under the monitor whose rank 1 stays ``--hold`` seconds in a section named "load"
(the others wait in an untraced barrier), for the section-timeout and dump-grace tests. Monitor
settings come from HPCRT_MONITOR_*."""

import argparse
import time

import hpcrt
from hpcrt import monitor

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", required=True)
parser.add_argument("--hold", type=float, required=True)
args = parser.parse_args()

rt = hpcrt.init({"log_files": False, "run_dir": args.run_dir})
mon = monitor.start()
mon.on("hang", lambda e: print(f"CALLBACK hang in '{e['op']}' on rank {e['rank']}", flush=True))
with monitor.section("load"):
    if rt.rank == 1:
        time.sleep(args.hold)
rt.comm.Barrier()
print(f"rank {rt.rank} done", flush=True)
monitor.stop()
hpcrt.finalize()
