"""Real-process checkpoint jobs for the crash, resharding and independent-reader tests.

    ckpt_job.py save DIR LOCAL STEPS        save steps 1..STEPS (global level every save)
    ckpt_job.py kill DIR LOCAL SEED         save in a loop; one rank SIGKILLs itself in a chosen phase
    ckpt_job.py resave DIR LOCAL PHASE      save steps 1, 2 (keep=1), restore step 2 in a new
                                            Checkpointer and save step 2 again with other data;
                                            the last rank SIGKILLs itself in PHASE of that save
    ckpt_job.py check DIR LOCAL [DIR LOCAL ...]   restore each, compare with what was saved
                                            ($CKPT_SAVED_SIZE: the rank count that saved it)

The saved state is a pure function of (step, rank, world size), so a fresh job knows what every
committed step must hold, bit for bit, whatever the rank count."""

import json
import os
import signal
import sys
import threading
import time

import numpy as np

import hpcrt
from hpcrt.checkpoint import Checkpointer, CheckpointNotFoundError, Shard

GLOBAL_SHAPE = (13, 5)
VECTOR = 37
PHASES = ["snapshot", "digest", "local:write", "local:rename", "local:vote", "local:manifest",
          "partner:write", "partner:rename", "partner:vote", "global:write", "global:rename",
          "global:manifest", "global:retention", "timer"]


def full(step):
    """The global arrays of ``step``."""
    rng = np.random.default_rng(step)
    return {"w": rng.standard_normal(GLOBAL_SHAPE), "v": rng.integers(-2**31, 2**31, VECTOR, dtype=np.int32)}


def bounds(n, size):
    """Uneven cuts: rank r gets more rows than rank r-1 where possible."""
    weights = np.arange(1, size + 1)
    cuts = np.concatenate([[0], np.cumsum(weights)]) * n // weights.sum()
    return [(int(cuts[r]), int(cuts[r + 1])) for r in range(size)]


def state(step, rank, size):
    arrays = full(step)
    (w0, w1), (v0, v1) = bounds(GLOBAL_SHAPE[0], size)[rank], bounds(VECTOR, size)[rank]
    return {"model": {"w": Shard(arrays["w"][w0:w1], GLOBAL_SHAPE, (w0, 0))},
            "v": Shard(arrays["v"][v0:v1], (VECTOR,), (v0,)),
            "mine": np.full(3, rank * 100 + step, dtype=np.int64),
            "rng": np.random.default_rng([step, rank]).bit_generator.state,
            "meta": {"step": step, "rank": rank}}


def runtime():
    topology = os.environ.get("CKPT_TOPOLOGY")
    return hpcrt.init({"log_files": False, **({"topology_file": topology} if topology else {})})


def save(directory, local, steps):
    rt = runtime()
    with Checkpointer(directory, local_dir=local, keep=2) as ck:
        for step in range(1, steps + 1):
            ck.save(step, state(step, rt.rank, rt.size))
            ck.wait_snapshot()
        ck.wait()


def kill(directory, local, seed):
    rt = runtime()
    rng = np.random.default_rng(seed)
    phase = PHASES[seed % len(PHASES)]
    victim = 0 if phase.endswith(":manifest") else int(rng.integers(rt.size))
    occurrence, delay = int(rng.integers(2, 5)), float(rng.uniform(0, 0.004))

    def die():
        print(f"KILL seed={seed} rank={rt.rank} phase={phase}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    seen = []

    def hook(name):
        if name == phase:
            seen.append(name)
            if len(seen) == occurrence:
                die() if delay < 0.002 else threading.Timer(delay, die).start()

    ck = Checkpointer(directory, local_dir=local, keep=2, global_every=2)
    if rt.rank == victim:
        if phase == "timer":
            threading.Timer(float(rng.uniform(0.05, 0.5)), die).start()
        else:
            ck._on_phase = hook
    for step in range(1, 9):
        ck.save(step, state(step, rt.rank, rt.size))
        ck.wait_snapshot()
        time.sleep(0.01)
    ck.close()


def resave(directory, local, phase):
    rt = runtime()
    with Checkpointer(directory, local_dir=local, keep=1) as ck:
        for step in (1, 2):
            ck.save(step, state(step, rt.rank, rt.size))
        ck.wait()
    ck = Checkpointer(directory, local_dir=local, keep=1)
    step, got = ck.restore()
    assert step == 2 and not compare(got, 2, rt.rank, rt.size), "the restore before the re-save"

    def hook(name):
        if name == phase:
            print(f"KILL rank={rt.rank} phase={phase}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    if rt.rank == rt.size - 1:
        ck._on_phase = hook
    other = state(3, rt.rank, rt.size)  # other data under the same step
    other["meta"]["step"] = 2
    ck.save(2, other)
    ck.wait()
    ck.close()


def check(pairs):
    rt = runtime()
    results = []
    for directory, local in pairs:
        with Checkpointer(directory, local_dir=local) as ck:
            committed = [entry["step"] for entry in ck.list()]
            try:
                step, got = ck.restore()
            except CheckpointNotFoundError:
                results.append({"dir": directory, "step": None, "committed": committed, "ok": True})
                continue
            saved_size = int(os.environ.get("CKPT_SAVED_SIZE", rt.size))
            wrong = compare(got, step, rt.rank, rt.size, saved_size) + tiling(rt.comm, got)
            tmp_left = [str(p) for root in (ck.places.directory, ck.places.local_root)
                        for p in root.rglob("*.tmp")]
            everyone = rt.comm.allgather(wrong)
            results.append({"dir": directory, "step": step, "committed": committed, "ok": not any(everyone),
                            "wrong": [w for ws in everyone for w in ws],
                            "sources": sorted(set(ck.restored_from.values())), "tmp_left": tmp_left})
    if rt.rank == 0:
        print("RESULTS " + json.dumps(results), flush=True)


def expected_rows(n, rank, size, saved_size):
    """Rows ``[start, stop)`` of axis 0 that ``rank`` must get back, worked out here, not asked of
    the restore: the saved cut on the saved rank count, else numpy's even split (the first
    ``n % size`` ranks one row more)."""
    if size == saved_size:
        return bounds(n, size)[rank]
    rows = np.array_split(np.arange(n), size)[rank]
    return int(rows[0]), int(rows[-1]) + 1


def compare(got, step, rank, size, saved_size=None):
    """What is wrong with this rank's restore of ``step`` (empty: nothing): each shard holds exactly
    the rows :func:`expected_rows` gives, at that offset, equal to the global array; plain values
    are saved rank ``rank % saved_size``'s, computed from that rank number, not read back."""
    saved_size = size if saved_size is None else saved_size
    arrays, wrong = full(step), []
    for name, shard in (("w", got["model"]["w"]), ("v", got["v"])):
        start, stop = expected_rows(arrays[name].shape[0], rank, size, saved_size)
        want = arrays[name][start:stop]
        if shard.offset != (start,) + (0,) * (want.ndim - 1) or shard.global_shape != arrays[name].shape:
            wrong.append(f"{name}: offset {shard.offset} of {shard.global_shape}, want rows {start}:{stop}")
        elif shard.array.dtype != want.dtype or not np.array_equal(shard.array, want):
            wrong.append(f"{name}: the data of rows {start}:{stop} differ")
    old = rank % saved_size
    if got["meta"] != {"step": step, "rank": old} or not np.array_equal(got["mine"], np.full(3, old * 100 + step)) \
            or got["rng"] != np.random.default_rng([step, old]).bit_generator.state:
        wrong.append(f"plain values are not saved rank {old}'s: meta {got['meta']}, mine {got['mine'].tolist()}")
    return wrong


def tiling(comm, got):
    """What is wrong with the shards of all ranks together: each global element exactly once."""
    wrong = []
    for name, shard in (("w", got["model"]["w"]), ("v", got["v"])):
        count = np.zeros(shard.global_shape, dtype=np.int64)
        for offset, shape in comm.allgather((shard.offset, shard.array.shape)):
            count[tuple(slice(o, o + n) for o, n in zip(offset, shape))] += 1
        if not (count == 1).all():
            wrong.append(f"{name}: {int((count == 0).sum())} elements on no rank, {int((count > 1).sum())} on "
                         f"more than one")
    return wrong


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "save":
        save(args[0], args[1], int(args[2]))
    elif mode == "kill":
        kill(args[0], args[1], int(args[2]))
    elif mode == "resave":
        resave(args[0], args[1], args[2])
    else:
        check(list(zip(args[0::2], args[1::2])))
