"""The LSE merge's memory bandwidth beside a copy of the same bytes, measured side by side in one run.

For each row count, dtype and kernel: the median time of a merge, the bytes it moves (reads o1, o2, l1,
l2; writes o, l) per second, the same for a device-to-device (or host) copy moving as many bytes, and
their ratio. ``python -m hpcrt.collectives.bench lse --help`` lists the options.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from hpcrt.collectives.attention.lse_merge import LSE_DTYPES, lse_merge, lse_merge_expression

GPU_ROWS = (1 << 18, 1 << 19, 1 << 20, 1 << 21)
CPU_ROWS = (1 << 10, 1 << 12)
CHECKED_ROWS = 1024
"""Rows of each kernel's output compared with the numpy expression on the host (``wrong``)."""
COLUMNS = ("rows", "d_v", "dtype", "kernel", "time_med(us)", "GB/s", "copy_GB/s", "x_copy", "wrong")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options on ``parser`` (its own, or the ``lse`` subcommand of ``hpcrt.collectives.bench``)."""
    parser.add_argument("--buffers", choices=("auto", "numpy", "cupy"), default="auto",
                        help="cupy where a GPU is visible (auto), else numpy")
    parser.add_argument("--rows", type=int, nargs="+", help=f"row counts (GPU {GPU_ROWS}, CPU {CPU_ROWS})")
    parser.add_argument("--width", type=int, default=128, help="d_v, the values per row")
    parser.add_argument("--dtypes", nargs="+", choices=LSE_DTYPES, default=list(LSE_DTYPES))
    parser.add_argument("--kernels", nargs="+", choices=("numpy", "numba", "cupy"),
                        help="default: cupy and numpy (the unfused expression) on GPU, numba and numpy on CPU")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each, copy and merge alternating")


def _resolved(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the defaults that depend on whether a GPU is visible filled in."""
    if args.buffers == "auto":
        from hpcrt.topology.discovery import gpu_count
        args.buffers = "cupy" if gpu_count() > 0 else "numpy"
    on_gpu = args.buffers == "cupy"
    args.rows = args.rows or list(GPU_ROWS if on_gpu else CPU_ROWS)
    args.kernels = args.kernels or (["cupy", "numpy"] if on_gpu else ["numba", "numpy"])
    return args


def _timer(xp: Any) -> Callable[[Callable[[], Any]], float]:
    """Seconds one call of ``fn`` takes: CUDA events around it on the GPU, the wall clock on the host."""
    if xp is np:
        def host(fn: Callable[[], Any]) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return host
    start, end = xp.cuda.Event(), xp.cuda.Event()

    def device(fn: Callable[[], Any]) -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return xp.cuda.get_elapsed_time(start, end) * 1e-3
    return device


def _copier(xp: Any, nbytes: int) -> Callable[[], Any]:
    """A copy of ``nbytes`` bytes: cudaMemcpyAsync device to device, or numpy's copyto."""
    source, target = xp.ones(nbytes, xp.uint8), xp.empty(nbytes, xp.uint8)
    if xp is np:
        return lambda: np.copyto(target, source)
    return lambda: target.data.copy_from_device_async(source.data, nbytes)


def bench_rows(xp: Any, rows: int, width: int, dtype: str, kernels: Sequence[str], repeats: int) -> list[tuple]:
    """One result row per kernel for merges of ``rows`` x ``width`` values, each beside a copy of the same bytes."""
    o1, o2 = ((xp.random.random((rows, width)) * 2 - 1).astype(dtype) for _ in range(2))
    l1, l2 = ((xp.random.random(rows) * 20 - 10).astype(dtype) for _ in range(2))
    out = (xp.empty_like(o1), xp.empty_like(l1))
    moved = 3 * (o1.nbytes + l1.nbytes)
    copy, timed = _copier(xp, moved // 2), _timer(xp)
    results = []
    for kernel in kernels:
        merge = functools.partial(lse_merge, o1, l1, o2, l2, out=out, kernel=kernel)
        merge(), copy()  # compile and warm up
        times = [(timed(copy), timed(merge)) for _ in range(repeats)]
        copy_s, merge_s = (statistics.median(column) for column in zip(*times))
        rate, copy_rate = moved / merge_s, 2 * (moved // 2) / copy_s
        results.append((rows, width, dtype, kernel, f"{merge_s * 1e6:.1f}", f"{rate / 1e9:.1f}",
                        f"{copy_rate / 1e9:.1f}", f"{rate / copy_rate:.3g}", _wrong(xp, (o1, l1, o2, l2), out)))
    return results


def _wrong(xp: Any, args: tuple, out: tuple) -> int:
    """Values of the first rows of ``out`` off the numpy expression by more than the dtype's rounding."""
    host = [a[:CHECKED_ROWS].get() if xp is not np else a[:CHECKED_ROWS] for a in (*args, *out)]
    want = lse_merge_expression(np, *host[:4])
    tolerance = 1e-5 if host[0].dtype == np.float32 else 1e-12
    return sum(int(np.count_nonzero(~np.isclose(got, expected, rtol=tolerance, atol=tolerance)))
               for got, expected in zip(host[4:], want))


def run(args: argparse.Namespace) -> int:
    """Print one table row per row count, dtype and kernel, then each kernel's range of ratios to the copy."""
    args = _resolved(args)
    if args.buffers == "cupy":
        import cupy as xp
    else:
        xp = np
    print(f"# lse_merge on {args.buffers} buffers; copy = "
          f"{'cudaMemcpyAsync device to device' if xp is not np else 'numpy copyto'} of the same bytes moved")
    table = [COLUMNS]
    for rows in args.rows:
        for dtype in args.dtypes:
            table += bench_rows(xp, rows, args.width, dtype, args.kernels, args.repeats)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)), flush=True)
    for kernel in args.kernels:
        for dtype in args.dtypes:
            ratios = [float(row[7]) for row in table[1:] if row[3] == kernel and row[2] == dtype]
            print(f"# lse_merge {kernel} {dtype}: {min(ratios):.3g}-{max(ratios):.3g}x the copy's bandwidth "
                  f"at {min(args.rows)}-{max(args.rows)} rows x {args.width}")
    return 0


def lse_bench(argv: Optional[Sequence[str]] = None) -> int:
    """The bench on its own command line."""
    parser = argparse.ArgumentParser(prog="lse_bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(lse_bench())
