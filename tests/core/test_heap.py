"""hpcrt.init's heap setting (``keep_freed_mb``): a rank that allocates and frees large arrays round
after round stops page-faulting with it, faults every round's pages in again without it (glibc's
default, which maps each large block afresh), and still hands back a peak larger than the bound."""

import json
import platform

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc malloc's")

ROUNDS = """
import ctypes, json, resource, sys
import numpy as np
import hpcrt
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KiB pages, not huge ones
runtime = hpcrt.init({"log_files": False, "keep_freed_mb": int(sys.argv[1])})


def rounds(mib):
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        first, second = np.ones(mib << 17), np.ones(mib << 17)  # float64: mib MiB each, freed in reverse
        del second, first
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


print(json.dumps({"kept": runtime.heap_kept, "32 MiB": rounds(32), "256 MiB": rounds(256)}))
"""
PAGES_32_MIB = 2 * (32 << 20) // 4096  # pages of one round's two arrays


def _rounds(launch, keep_freed_mb: int) -> dict:
    result = launch(["-c", ROUNDS, str(keep_freed_mb)], ranks=1)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kept_heap_stops_refaulting_below_its_bound(launch):
    on, off = _rounds(launch, 128), _rounds(launch, 0)
    assert on["kept"] and not off["kept"]
    assert min(off["32 MiB"][1:]) >= PAGES_32_MIB // 2, off  # every round touches new pages
    assert max(on["32 MiB"][1:]) <= PAGES_32_MIB // 100, on  # the first round's pages, reused
    # 512 MiB freed at once is more than the 128 MiB bound: handed back, faulted in again next round.
    assert min(on["256 MiB"][1:]) >= 8 * PAGES_32_MIB // 2, on


@pytest.mark.parametrize("keep_freed_mb, bound", [(2047, 2047 << 20), (2048, 2**31 - 1), (5000, 2**31 - 1)])
def test_a_bound_above_2047_mb_counts_as_the_largest_malloc_takes(launch, keep_freed_mb, bound):
    script = ("import hpcrt; from hpcrt.core import heap; "
              f"rt = hpcrt.init({{'log_files': False, 'keep_freed_mb': {keep_freed_mb}}}); "
              "print(rt.heap_kept, heap._KEPT)")  # the bound handed to mallopt, which takes a C int
    result = launch(["-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", f"[{bound}]"]
