"""``mpiexec -n 4 python -m hpcrt.jobs.train.bench SUITE``: the training job's costs, measured side
by side in one MPI job — variants of one config take turns for several rounds, and each row is the
median step time over rounds (the first steps of a run, warm-up, left out).

Suites: ``scan`` (pipeline vs allgather vs ring at sp = ranks), ``zero`` (none vs flat vs hpz; use
``--topology two_nodes_emulated``), ``checkpoint`` (none vs async every 10 steps vs async and
blocking every step), ``monitor`` (off vs on), ``balance`` (parallel.balance none vs static with
rank 1 at half weight vs monitor, windows of 10 steps; slow rank 1 with
``HPCRT_FAULT=slow:rank=1,factor=2``). ``--only VARIANT`` keeps some variants, ``--set
model.d_model=256`` changes the base config.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import hpcrt
from hpcrt.monitor import MonitorConfig

from hpcrt.jobs.train.config import parse_settings
from hpcrt.jobs.train.data import make_source
from hpcrt.jobs.train.job import train
from hpcrt.jobs.train.metrics import SECTIONS

BASE = {"model": {"vocab": 64, "d_model": 64, "heads": 2, "d_k": 16, "d_v": 16, "layers": 2, "d_ff": 128,
                  "dtype": "float32"},
        "data": {"kind": "markov", "branching": 3, "chain_seed": 1234},
        "parallel": {"sp": 1, "scan": "auto", "zero": "none", "allreduce": "auto", "balance": "none", "weights": None,
                     "gpu_weight": 4.0, "rebalance_every": 10, "rebalance_threshold": 0.25,
                     "rebalance_max_factor": 2.0},
        "train": {"steps": 40, "batch": 8, "seq_len": 64, "lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8,
                  "seed": 0, "log_every": 1000, "resume": "never", "monitor": False},
        "checkpoint": {"every": 0, "keep": 2, "blocking": False},
        "stop": {"signals": [], "max_minutes": 0, "grace_s": 0}, "slurm": {"max_requeues": 0}}
WARMUP = 5
SUITES = ("scan", "zero", "checkpoint", "monitor", "balance")
HALF_SPEED_RANK_1 = [1.0, 0.5, 1.0, 1.0]
"""The balance suite's static weights: the true speeds when rank 1 runs ``slow:rank=1,factor=2``."""
"""Steps of each run left out of its median (first calls, allocation, plan caches)."""


def variants(suite: str, world: int) -> dict:
    """Name -> config changes of each variant of ``suite``."""
    if suite == "scan":
        return {scan: {"parallel": {"sp": world, "scan": scan}} for scan in ("pipeline", "allgather", "ring")}
    if suite == "zero":
        return {zero: {"parallel": {"zero": zero}} for zero in ("none", "flat", "hpz")}
    if suite == "checkpoint":
        return {"none": {"checkpoint": {"every": 0}}, "async every 10": {"checkpoint": {"every": 10}},
                "async every step": {"checkpoint": {"every": 1}},
                "blocking every step": {"checkpoint": {"every": 1, "blocking": True}}}
    if suite == "monitor":
        return {"off": {"train": {"monitor": False}}, "on": {"train": {"monitor": True}}}
    if suite == "balance":
        on = {"train": {"monitor": True}, "monitor": {"report_every": 10}}
        return {"none": on, "static": {**on, "parallel": {"balance": "static", "weights": HALF_SPEED_RANK_1[:world]}},
                "monitor": {**on, "parallel": {"balance": "monitor"}}}
    raise SystemExit(f"train bench: unknown suite {suite!r}; choose {', '.join(SUITES)}")


def _config(changes: dict, steps: int, settings: Sequence[str] = ()) -> dict:
    """The base config with ``--set node.key=value`` settings and the variant's ``changes``."""
    config = copy.deepcopy(BASE)
    config["train"]["steps"] = steps
    for item in settings:
        key, _, raw = item.partition("=")
        node, _, name = key.partition(".")
        if node not in config or name not in config[node]:
            raise SystemExit(f"train bench: --set {item!r}: no key {key!r} in the base config")
        config[node][name] = type(config[node][name])(raw)
    for node, values in changes.items():
        config.setdefault(node, {}).update(values)
    return config


def measure(suite: str, rounds: int, steps: int, base: Path, settings: Sequence[str] = (),
            only: Sequence[str] = ()) -> dict:
    """Per variant (those named in ``only``, else all), per round, the median seconds of a step
    and of each section (collective)."""
    runtime = hpcrt.get_runtime()
    chosen = {name: changes for name, changes in variants(suite, runtime.size).items() if not only or name in only}
    if not chosen:
        raise SystemExit(f"train bench: --only {', '.join(only)}: no such variant of {suite}")
    found: dict = {name: [] for name in chosen}
    for round_ in range(rounds):
        for name, changes in chosen.items():
            config = parse_settings(_config(changes, steps, settings), runtime.size)
            source = make_source(config.data, config.shape.vocab, config.train.seq_len)
            folder = base / f"{name.replace(' ', '-')}-{round_}"
            monitor = (MonitorConfig(directory=str(folder / "monitor"), **changes.get("monitor", {}))
                       if config.train.monitor else None)
            every = train(config, source, folder, monitor, report=False).rows
            rows = every[WARMUP:]
            medians = {key: statistics.median(r[key] for r in rows) for key in ("step_s", *SECTIONS)}
            changed = [r["step"] for r in every[1:] if "shares" in r]
            found[name].append({**medians, "mean_step_s": statistics.fmean(r["step_s"] for r in rows),
                                "share_changes": len(changed), "last_change": changed[-1] if changed else 0,
                                "final_shares": next(r["shares"] for r in reversed(every) if "shares" in r)})
    return found


def table(suite: str, found: dict, world: int) -> str:
    """Markdown: per variant the median over rounds of each figure (the median step, the mean step
    — which carries the occasional checkpoint or straggler window — and each section), and the
    median over rounds of each round's mean-step ratio to the first variant's in the same round; then each
    variant's speed-up and share changes."""
    first = next(iter(found.values()))
    lines = [f"| {suite} | median step ms | mean step ms | mean ratio | "
             + " | ".join(f"{s} ms" for s in SECTIONS) + " |", "|" + " --- |" * (4 + len(SECTIONS))]
    for name, rounds in found.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in (*SECTIONS, "step_s", "mean_step_s")}
        ratio = statistics.median(r["mean_step_s"] / f["mean_step_s"] for r, f in zip(rounds, first))
        lines.append(f"| {name} | {med['step_s'] * 1e3:.1f} | {med['mean_step_s'] * 1e3:.1f} | {ratio:.3f} | "
                     + " | ".join(f"{med[s] * 1e3:.2f}" for s in SECTIONS) + " |")
    return "\n".join(lines) + f"\n\n{world} ranks, {len(first)} rounds" + _shares(found, first)


def _shares(found: dict, first: list) -> str:
    """Per variant: the median over rounds of the first variant's median step over its own (the
    speed-up), how often its shares changed, the last step that changed them, and its final shares."""
    lines = ["", "", "| variant | speed-up over the first (median step) | share changes | last change at step "
             "| final shares [sequences, tokens] |", "| --- | --- | --- | --- | --- |"]
    for name, rounds in found.items():
        speedup = statistics.median(f["step_s"] / r["step_s"] for r, f in zip(rounds, first))
        changes = [r["share_changes"] for r in rounds]
        last = [r["last_change"] for r in rounds]
        lines.append(f"| {name} | {speedup:.2f} | {changes} | {last} | {rounds[-1]['final_shares']} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hpcrt.jobs.train.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--rounds", type=int, default=5, help="turns each variant takes (default 5)")
    parser.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    parser.add_argument("--topology", default=None, help="a topology file or shipped name, e.g. two_nodes_emulated")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw per-round medians here")
    parser.add_argument("--only", action="append", default=[], metavar="VARIANT",
                        help="run only this variant (repeatable), e.g. --only none --only 'async every 10'")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.KEY=VALUE",
                        help="change the base config, e.g. --set model.d_model=256 (repeatable)")
    args = parser.parse_args(argv)
    runtime = hpcrt.init({"topology_file": args.topology, "log_level": "WARNING"})
    base = Path(runtime.comm.bcast(tempfile.mkdtemp(prefix="hpcrt-train-bench-") if runtime.rank == 0 else None))
    found = measure(args.suite, args.rounds, args.steps, base, args.set, args.only)
    runtime.comm.Barrier()
    if runtime.rank == 0:
        shutil.rmtree(base)
        print(table(args.suite, found, runtime.size), flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(found, indent=1))
    hpcrt.finalize()


if __name__ == "__main__":
    main(sys.argv[1:])
