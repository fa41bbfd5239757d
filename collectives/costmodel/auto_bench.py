"""``python -m hpcrt.collectives.bench auto``: ``auto`` timed beside each algorithm it picks from,
size by size, in interleaved blocks, so that the machine's drift falls on every row alike and the
ratio auto / fastest says how good the choice was (the bench job times one row after another,
which on a noisy machine can differ by more than the 10% asked of ``auto``)."""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from hpcrt.costmodel.timing import call_samples, median_call

from hpcrt.collectives.costmodel.memo import auto_ran, tally_label

SMALL_BYTES = 64 << 10
"""Sizes up to this are "small": there ``auto`` must also keep up with hpcrt's own ``mpi`` path."""
BLOCK_SECONDS = 0.02
"""Time one block of one row aims at: its call count follows from a first timed call."""


@dataclass(frozen=True)
class Family:
    """A collective as this bench calls it: its algorithms and ``call(x, algorithm)``."""

    name: str
    algorithms: tuple[str, ...]
    call: Callable[[np.ndarray, str, bool], Any]
    """``call(x, algorithm, validate)``: one call of the collective on ``x``."""


def _families() -> dict[str, Family]:
    from hpcrt.collectives import all_scan, allreduce
    return {
        "all_scan": Family("all_scan", ("mpi", "pipeline", "ring", "allgather"),
                           lambda x, algorithm, validate: all_scan(x, "sum", algorithm=algorithm, validate=validate)),
        "allreduce": Family("allreduce", ("mpi", "ring", "bidir_ring"),
                            lambda x, algorithm, validate: allreduce(x, algorithm=algorithm, validate=validate)),
    }


@dataclass(frozen=True)
class Result:
    """One size of one collective: each algorithm's median latency (``auto`` among them) and what auto ran."""

    nbytes: int
    seconds: dict
    ran: str

    @property
    def fastest(self) -> str:
        """The fastest algorithm other than auto."""
        return min((name for name in self.seconds if name != "auto"), key=self.seconds.__getitem__)

    @property
    def twin(self) -> Optional[str]:
        """The row that runs the very code auto ran (the ring is the one-block pipeline), or None
        (a pipeline of more blocks, or calls that differed): auto against it is the noise alone."""
        name = "ring" if self.ran == "pipeline/1" else self.ran
        return name if name in self.seconds and name != "auto" else None

    def ratio(self, reference: str) -> float:
        return self.seconds["auto"] / self.seconds[reference]


def _calls_per_block(comm: Any, call: Callable[[], Any]) -> int:
    """Calls that fill about :data:`BLOCK_SECONDS`, the same on every rank (5 to 200)."""
    first = max(call_samples(call, 2, comm))
    return int(min(200, max(5, BLOCK_SECONDS / max(first, 1e-9))))


def measure(comm: Any, family: Family, nbytes: int, blocks: int, validate: bool) -> Result:
    """``blocks`` rounds over auto and every algorithm at ``nbytes`` (float32, ones): each round
    times every row's calls alone after a barrier (the slowest rank's), and a row's figure is the
    median of its rounds' medians."""
    x = np.ones(max(1, nbytes // 4), dtype=np.float32)
    rows = {name: (lambda name=name: family.call(x, name, validate)) for name in (*family.algorithms, "auto")}
    counts = {name: _calls_per_block(comm, call) for name, call in rows.items()}
    samples: dict = {name: [] for name in rows}
    ran: Counter = Counter()
    for _ in range(blocks):
        for name, call in rows.items():
            with auto_ran() as tally:  # what auto ran in its timed calls
                samples[name].append(median_call(call, counts[name], comm))
            ran.update(tally)
    return Result(x.nbytes, {name: statistics.median(values) for name, values in samples.items()},
                  tally_label(comm.allgather(ran)) or "")


def table(family: Family, results: list[Result]) -> list[str]:
    """The markdown table of one collective, and its verdict lines."""
    names = (*family.algorithms, "auto")
    lines = [f"{family.name}: median latency per call (µs), the slowest rank's",
             "| size (B) | " + " | ".join(names)
             + " | auto ran | fastest | auto / fastest | auto / mpi | auto / same code |",
             "| ---: | " + " | ".join("---:" for _ in names) + " | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.nbytes} | " + " | ".join(f"{r.seconds[n] * 1e6:.1f}" for n in names)
                     + f" | {r.ran} | {r.fastest} | {r.ratio(r.fastest):.2f} | {r.ratio('mpi'):.2f} | "
                     + ("-" if r.twin is None else f"{r.ratio(r.twin):.2f}") + " |")
    worst = max(results, key=lambda r: r.ratio(r.fastest))
    within = sum(r.ratio(r.fastest) <= 1.1 for r in results)
    lines.append(f"# {family.name} auto within 10% of the fastest at {within} of {len(results)} sizes; "
                 f"worst {worst.ratio(worst.fastest):.2f}x at {worst.nbytes} B")
    small = [r for r in results if r.nbytes <= SMALL_BYTES]
    if small:
        slowest = max(small, key=lambda r: r.ratio("mpi"))
        lines.append(f"# {family.name} auto / mpi at <= {SMALL_BYTES} B: worst {slowest.ratio('mpi'):.2f}x "
                     f"at {slowest.nbytes} B")
    twins = sorted(r.ratio(r.twin) for r in results if r.twin is not None)
    if twins:
        lines.append(f"# {family.name} noise: auto against the row running the same code, {twins[0]:.2f}x to "
                     f"{twins[-1]:.2f}x over {len(twins)} sizes")
    return lines


def run(args: argparse.Namespace) -> int:
    """Measure every size of each collective named and print the tables (rank 0)."""
    import hpcrt
    from hpcrt.collectives import calibrate
    from hpcrt.core.config import ConfigError

    if args.min_bytes < 1 or args.max_bytes < args.min_bytes or args.factor < 2 or args.blocks < 1:
        raise ConfigError(f"auto bench: needs 1 <= --min-bytes <= --max-bytes, --factor >= 2 and --blocks >= 1; got "
                          f"{args.min_bytes}, {args.max_bytes}, {args.factor} and {args.blocks}")
    hpcrt.init({"log_files": False})
    comm = hpcrt.get_runtime().comm
    if args.calibrate:
        calibrate()
    families = _families()
    sizes = []
    size = args.min_bytes
    while size <= args.max_bytes:
        sizes.append(size)
        size *= args.factor
    for name in args.collectives:
        results = [measure(comm, families[name], nbytes, args.blocks, args.validate) for nbytes in sizes]
        if comm.rank == 0:
            print("\n".join(table(families[name], results)) + "\n", flush=True)
    hpcrt.finalize()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ranks", type=int, default=2, help="ranks to launch when run alone (default 2)")
    parser.add_argument("--collectives", nargs="+", choices=("all_scan", "allreduce"),
                        default=["all_scan", "allreduce"])
    parser.add_argument("--min-bytes", type=int, default=8)
    parser.add_argument("--max-bytes", type=int, default=64 << 20)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=9, help="interleaved rounds per size (default 9)")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="call with validate=False (default: the default call, validate on)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="weigh the topology's costs, not the job's calibration (default: calibrate first)")
