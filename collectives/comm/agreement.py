"""The header check of every collective: ranks that disagree on shape, dtype, op or algorithm
get a clear error on every rank instead of a deadlock."""

from __future__ import annotations

from typing import Any


class CollectiveMismatchError(ValueError):
    """Ranks called one collective with different arguments."""


def check_agreement(comm: Any, collective: str, **fields: Any) -> None:
    """Raise :class:`CollectiveMismatchError` on every rank if any field differs across ranks.

    One small allgather; the message names the field, the ranks that differ from rank 0 and
    what each has.
    """
    everyone = comm.allgather(fields)
    for key, reference in everyone[0].items():
        differ = {rank: f[key] for rank, f in enumerate(everyone) if f.get(key) != reference}
        if differ:
            detail = ", ".join(f"rank {rank} has {value!r}" for rank, value in differ.items())
            raise CollectiveMismatchError(
                f"{collective}: ranks disagree on {key}: rank 0 has {reference!r}, {detail} "
                f"(seen on rank {comm.rank})")
