"""``hpcrt ckpt list|verify|inspect DIR``: the checkpoint directory from the command line."""

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
                           ("verify", "check every file's size and xxh3-128 checksum; exit 1 on a bad or "
                            "missing file"),
                           ("inspect", "a step's arrays (shapes, dtypes, bytes) and levels (files, bytes)")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("directory", metavar="DIR", help="the checkpoint directory (the global level)")
        if name != "list":
            action.add_argument("--step", type=int, required=name == "inspect", help="one step only")
            action.add_argument("--local-dir", metavar="PATH", help="node-local directory the job used "
                                "(default: $SLURM_TMPDIR or the system temporary directory)")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``hpcrt ckpt``; checkpoint errors become one line on stderr and exit code 2."""
    from .catalog import describe, manifests, verify
    from .errors import CheckpointError
    from .levels import Places
    places = Places.of(args.directory, getattr(args, "local_dir", None))
    try:
        if args.ckpt_action == "list":
            return _list(manifests(places), args.json)
        if args.ckpt_action == "verify":
            return _verify(verify(places, args.step), args.json)
        return _inspect(describe(places, args.step), args.json)
    except CheckpointError as exc:
        print(f"hpcrt ckpt {args.ckpt_action}: error: {exc}", file=sys.stderr)
        return 2


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
            print(f"{c.status.upper()}: step {c.step} level {c.level} {who}: {c.path}: {c.detail}")
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
