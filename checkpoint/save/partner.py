"""The partner level's exchange: each rank sends its snapshot to its holder on the next node
(:func:`levels.partner_holders`) and receives, as snapshots, the ones it holds."""

from __future__ import annotations

from hpcrt.backends.staging import PinnedPool
from hpcrt.core.tags import CHECKPOINT_PARTNER

from hpcrt.checkpoint.save.collective import Collectives
from hpcrt.checkpoint.save.snapshot import Snapshot


def exchange(coll: Collectives, pool: PinnedPool, holders: list, snap: Snapshot, layouts: list, texts: list,
             sizes: list) -> list:
    """``[(owner rank, its snapshot)]`` held by this rank (the caller releases them); bounded by
    the collectives' timeout like every checkpoint collective."""
    rank, comm = coll.rank, coll.comm
    held = [r for r, h in enumerate(holders) if h == rank]
    received = [Snapshot(snap.step, layouts[r], texts[r], pool.acquire(max(sizes[r], 1)), pool) for r in held]
    requests = [comm.Irecv(s.buffer[:sizes[r]], source=r, tag=CHECKPOINT_PARTNER) for r, s in zip(held, received)]
    requests.append(comm.Isend(snap.buffer[:snap.nbytes], dest=holders[rank], tag=CHECKPOINT_PARTNER))
    # on a timeout the buffers stay with the abandoned requests (MPI may still write them)
    coll.traced_wait(requests, "ckpt_partner", snap.nbytes, keep=(snap, received))
    return list(zip(held, received))
