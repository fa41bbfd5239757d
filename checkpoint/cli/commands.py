"""``hpcrt ckpt list|verify|inspect|gc DIR``: the checkpoint directory from the command line.

Exit codes: 0 all good (``gc`` also when a live job holds DIR and it removed nothing); 1
``verify`` found a bad or missing data file; 2 the directory is not a checkpoint directory, a
manifest is damaged or of a newer format, gc's DIR does not exist here (without ``--dir-removed``),
or the arguments are wrong.
Every error is one line on stderr naming the file (never a traceback); a damaged manifest is
named and skipped, and the rest is still reported."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``ckpt`` command to the ``hpcrt`` parser (heavy imports wait for the handler)."""
    ckpt = subparsers.add_parser("ckpt", help="list, verify or inspect an hpcrt checkpoint directory")
    actions = ckpt.add_subparsers(dest="ckpt_action", required=True, metavar="ACTION")
    for name, helptext in (("list", "committed steps and their levels"),
                           ("verify", "check every file's size and xxh3-128 checksum, and each rank file "
                            "against its manifest; exit 1 on a bad or missing file, 2 on a damaged manifest"),
                           ("inspect", "a step's arrays (shapes, dtypes, bytes) and levels (files, bytes)")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("directory", metavar="DIR", help="the checkpoint directory (the global level)")
        if name != "list":
            action.add_argument("--step", type=int, required=name == "inspect", help="one step only")
            action.add_argument("--local-dir", metavar="PATH", help="node-local directory the job used "
                                "(default: $SLURM_TMPDIR or the system temporary directory)")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(func=run)
    gc = actions.add_parser("gc", help="remove this node's local copies of DIR that no committed checkpoint "
                            "references and no live job holds (hpcrt-ckpt-* folders)")
    gc.add_argument("directory", metavar="DIR", help="the checkpoint directory (it may be gone)")
    gc.add_argument("--local-dir", metavar="PATH", help="node-local directory the job used "
                    "(default: $SLURM_TMPDIR or the system temporary directory)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--dir-removed", action="store_true", help="DIR was deleted: remove its node-local copies "
                    "(without it, a DIR this host does not see is refused: it may be a live job's, not mounted here)")
    gc.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``hpcrt ckpt``; errors become one line on stderr and exit code 2."""
    from hpcrt.checkpoint.cli.catalog import describe, manifests, verify
    from hpcrt.checkpoint.errors import CheckpointError
    from hpcrt.checkpoint.files.levels import Places
    what = f"hpcrt ckpt {args.ckpt_action}"
    try:
        places = Places.of(args.directory, getattr(args, "local_dir", None))
        if args.ckpt_action == "list":
            found, problems = manifests(places)
            code = _list(found, args.json)
        elif args.ckpt_action == "verify":
            checks, problems = verify(places, args.step)
            code = _verify(checks, args.json)
        elif args.ckpt_action == "inspect":
            info, problems = describe(places, args.step)
            code = _inspect(info, args.json)
        else:
            from hpcrt.checkpoint.cli.gc import collect
            problems, code = [], _gc(collect(places, args.dry_run, args.dir_removed), args.dry_run)
    except BrokenPipeError:  # the reader went away (``| head``): hpcrt's main exits quietly
        raise
    except CheckpointError as exc:
        print(f"{what}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback: say what went wrong, in one line
        print(f"{what}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{what}: skipped: {_one_line(problem)}", file=sys.stderr)
    return 2 if problems else code


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _list(found: dict, as_json: bool) -> int:
    rows = [{"step": s, "levels": list(levels), "world_size": next(iter(levels.values()))["world_size"]}
            for s, levels in found.items()]
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'step':>10}  {'ranks':>5}  levels")
        for row in rows:
            print(f"{row['step']:>10}  {row['world_size']:>5}  {','.join(row['levels'])}")
    return 0


def _verify(checks: list, as_json: bool) -> int:
    bad = [c for c in checks if c.status != "ok"]
    if as_json:
        print(json.dumps([c.__dict__ for c in checks], indent=1))
    else:
        for c in bad:
            who = "global file" if c.rank is None else f"rank {c.rank}"
            print(f"{c.status.upper()}: step {c.step} level {c.level} {who}: {c.path}: {_one_line(c.detail)}")
        steps = sorted({c.step for c in checks})
        print(f"verified {len(checks)} files of {len(steps)} step(s): {len(checks) - len(bad)} ok, "
              f"{len(bad)} bad or missing")
    return 1 if bad else 0


def _inspect(info: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"step {info['step']}: {info['world_size']} ranks, format {info['format_version']}, "
          f"hpcrt {info['hpcrt_version']}")
    print(f"  {'array':<32} {'dtype':<10} {'kind':<8} {'shape':<28} {'bytes':>12}")
    for a in info["arrays"]:
        shape = str(tuple(a["shape"])) if a["sharded"] else "per rank " + str(
            [tuple(s) for s in a["shape"]][:4])[1:-1] + (" …" if len(a["shape"]) > 4 else "")
        print(f"  {a['key']:<32} {a['dtype']:<10} {'sharded' if a['sharded'] else 'rank':<8} {shape:<28} "
              f"{a['bytes']:>12}")
    for level, lv in info["levels"].items():
        nodes = f" on {', '.join(lv['nodes'])}" if lv["nodes"] else ""
        print(f"  level {level:<8} {lv['files']} files, {lv['bytes']} bytes{nodes}")
    return 0


def _gc(done: Any, dry_run: bool) -> int:
    if done.held is not None:
        print(f"{done.folder}: nothing removed: {_one_line(done.held)}")
        return 0
    for path, why in done.refused:
        print(f"refused {path}: {why}")
    for path in done.removed:
        print(f"{'would remove' if dry_run else 'removed'} {path}")
    print(f"{len(done.removed)} leftover(s) {'would be removed' if dry_run else 'removed'} in {done.folder}")
    return 0
