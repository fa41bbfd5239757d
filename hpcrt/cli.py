"""The ``hpcrt`` command line: the one face over every component (imported lazily)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from ._src.info import collect_info, format_info
    from ._src.runtime import finalize, init
    config = {"log_files": False, "abort_on_error": True}
    if args.topology:
        config["topology_file"] = args.topology
    runtime = init(config)
    info = collect_info(runtime)
    if runtime.rank == 0:
        print(json.dumps(info, indent=2) if args.json else format_info(info), flush=True)
    finalize()
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from ._src.diagnose import run_diagnose
    return run_diagnose(args.run_dir, args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcrt", description="hpcrt: a runtime for MPI jobs on "
                                     "heterogeneous clusters.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="print the MPI library, thread level, CUDA-awareness and the "
                          "ranks × node × device × NIC table (run it under mpiexec/srun for a job's view)")
    info.add_argument("--topology", metavar="FILE", help="topology file overriding discovery "
                      "(default: $HPCRT_TOPOLOGY_FILE)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_cmd_info)
    diagnose = sub.add_parser("diagnose", help="merge the monitor's dumps and heartbeats of a run: who never "
                              "entered which collective, who died first, where each rank was stuck")
    diagnose.add_argument("run_dir", metavar="RUN_DIR", help="the job's run directory (or its monitor/ folder)")
    diagnose.add_argument("--json", action="store_true", help="print JSON instead of text")
    diagnose.set_defaults(func=_cmd_diagnose)
    from .checkpoint._src.cli import register as register_ckpt
    register_ckpt(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hpcrt`` and ``python -m hpcrt``."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
