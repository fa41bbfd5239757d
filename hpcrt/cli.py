"""The ``hpcrt`` command line: the one face over every component (imported lazily)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    """A bad topology file, setting or launcher is said once, by rank 0, and every rank exits with 2."""
    from hpcrt.core.abort import USER_MISTAKES, say_once_and_exit
    from hpcrt.core.info import collect_info, format_info
    from hpcrt.core.runtime import finalize, init
    config = {"log_files": False, "abort_on_error": True}
    if args.topology:
        config["topology_file"] = args.topology
    try:
        runtime = init(config)
    except USER_MISTAKES as error:
        say_once_and_exit("hpcrt info", error, debug=os.environ.get("HPCRT_LOG_LEVEL", "").upper() == "DEBUG")
    try:
        info = collect_info(runtime)
        if runtime.rank == 0:
            print(json.dumps(info, indent=2) if args.json else format_info(info), flush=True)
    finally:  # a closed pipe on rank 0 still finalizes, so the other ranks are not left waiting
        finalize()
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from hpcrt.monitor.diagnosis import run_diagnose
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
    from hpcrt.checkpoint.cli.commands import register as register_ckpt
    register_ckpt(sub)
    return parser


CLOSED_PIPE_EXIT = 141
"""Exit status when the reader of stdout went away (``| head``): 128 + SIGPIPE, as a shell reports
``cat`` killed by a closed pipe."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hpcrt`` and ``python -m hpcrt``; every command exits quietly with
    :data:`CLOSED_PIPE_EXIT` when its output's reader has closed the pipe."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe can no longer be caught
        return code
    except BrokenPipeError:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at devnull,
        # so that the interpreter's last flush of what is still buffered does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
