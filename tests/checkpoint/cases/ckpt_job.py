"""Real-process checkpoint jobs for the crash, resharding and independent-reader tests.

    ckpt_job.py save DIR LOCAL STEPS        save steps 1..STEPS (global level every save)
    ckpt_job.py kill DIR LOCAL SEED         save in a loop; one rank SIGKILLs itself in a chosen phase
    ckpt_job.py resave DIR LOCAL PHASE      save steps 1, 2 (keep=1), restore step 2 in a new
                                            Checkpointer and save step 2 again with other data;
                                            the last rank SIGKILLs itself in PHASE of that save
    ckpt_job.py check DIR LOCAL [DIR LOCAL ...]   restore each, compare with what was saved

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
    assert step == 2 and compare(got, 2, rt.rank, rt.size), "the restore before the re-save"

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
            ok = compare(got, step, rt.rank, rt.size)
            tmp_left = [str(p) for root in (ck.places.directory, ck.places.local_root)
                        for p in root.rglob("*.tmp")]
            oks = rt.comm.allgather(ok)
            results.append({"dir": directory, "step": step, "committed": committed, "ok": all(oks),
                            "sources": sorted(set(ck.restored_from.values())), "tmp_left": tmp_left})
    if rt.rank == 0:
        print("RESULTS " + json.dumps(results), flush=True)


def compare(got, step, rank, size):
    """This rank's restored shards equal the global arrays of ``step`` at their offsets; plain
    values are those of old rank ``rank % old size`` (checked through their own content)."""
    arrays = full(step)
    for name, shard in (("w", got["model"]["w"]), ("v", got["v"])):
        box = tuple(slice(o, o + n) for o, n in zip(shard.offset, shard.array.shape))
        if shard.array.dtype != arrays[name].dtype or not np.array_equal(shard.array, arrays[name][box]):
            return False
    old_rank = got["meta"]["rank"]
    return (got["meta"]["step"] == step and np.array_equal(got["mine"], np.full(3, old_rank * 100 + step))
            and got["rng"] == np.random.default_rng([step, old_rank]).bit_generator.state)


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
