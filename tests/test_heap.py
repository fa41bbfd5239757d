"""hpcrt.init's heap setting (``keep_freed_memory``): a rank that allocates and frees large arrays
round after round stops page-faulting with it, and faults every round's pages in again without it
(glibc's default, which maps each large block afresh)."""

import json
import platform

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

ROUNDS = """
import json, resource, sys
import numpy as np
import hpcrt
runtime = hpcrt.init({"log_files": False, "keep_freed_memory": sys.argv[1] == "on"})
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    first, second = np.ones(4 << 20), np.ones(4 << 20)  # 32 MiB each, freed in reverse order
    del second, first
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": runtime.heap_kept, "faults": faults}))
"""


def _rounds(launch, setting: str) -> dict:
    result = launch(["-c", ROUNDS, setting], ranks=1)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kept_heap_stops_refaulting_large_buffers(launch):
    on, off = _rounds(launch, "on"), _rounds(launch, "off")
    assert on["kept"] and not off["kept"]
    assert min(off["faults"][1:]) > 100, off  # each round touches new pages
    assert max(on["faults"][1:]) <= min(off["faults"][1:]) // 10, (on, off)  # reuses the first round's
