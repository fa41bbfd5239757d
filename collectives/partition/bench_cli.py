"""Command line of the partition benchmark: prints one JSON row per line on rank 0.

    mpiexec -n 4 python -m hpcrt.collectives.partition.bench_cli --topology two_nodes_emulated
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

import hpcrt

from hpcrt.collectives.partition.bench import run_partition_benchmark


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="time one ZeRO step: flat vs hpZ vs 3-level")
    parser.add_argument("--topology", default="two_nodes_emulated", help="topology file or shipped name")
    parser.add_argument("--numel", type=int, default=1 << 20)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="write the rows here (rank 0)")
    args = parser.parse_args(argv)
    runtime = hpcrt.init({"topology_file": args.topology, "log_files": False})
    try:
        rows = run_partition_benchmark(args.numel, iters=args.iters, warmup=args.warmup)
    finally:
        hpcrt.finalize()
    if runtime.rank == 0:
        for row in rows:
            print(json.dumps(row))
        if args.json:
            with open(args.json, "w") as out:
                json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
