"""The training state in a checkpoint — parameters and Adam moments as shards of their flat
global buffers, the step and the model's hash — and its restore on any layout or rank count."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hpcrt import ConfigError, get_xp
from hpcrt.checkpoint import Checkpointer, DirectoryLockedError, Shard

from hpcrt.jobs.train.optim import Adam

log = logging.getLogger("hpcrt.jobs.train")

ARRAYS = ("params", "adam_m", "adam_v")


def training_state(step: int, params: Any, adam: Adam, owned: slice, saved: slice, model_hash: str,
                   layout: dict) -> dict:
    """What ``save()`` takes: this rank's ``saved`` slice of each flat buffer (the moments are held
    for ``owned`` only) at its global offset."""
    numel = params.size
    inside = slice(saved.start - owned.start, saved.stop - owned.start)
    return {"params": Shard(params[saved], (numel,), (saved.start,)),
            "adam_m": Shard(adam.m[inside], (numel,), (saved.start,)),
            "adam_v": Shard(adam.v[inside], (numel,), (saved.start,)),
            "step": step, "model_hash": model_hash, "layout": layout}


MARKER = "hpcrt-checkpoint.json"
"""The file that makes a folder a checkpoint directory."""


def open_and_resume(run_dir: Path, resume: str, keep: int, params: Any, adam: Adam, owned: slice,
                    model_hash: str) -> tuple[Checkpointer, int, Optional[dict]]:
    """The run's own checkpointer, the step restored into ``params`` and ``adam`` (0: none) and the
    rebalance state saved with it (``in_force``, ``next`` and ``pending`` weights; None: none saved).

    The run's own newest committed step comes first, whatever ``train.resume`` says (except
    ``never``): a requeued run that once started from another run's checkpoint goes on from its
    own progress. Only a run with nothing of its own reads ``train.resume``'s directory."""
    try:
        checkpointer = Checkpointer(run_dir / "checkpoints", keep=keep)
    except DirectoryLockedError as error:  # raised on every rank alike
        raise ConfigError(f"run directory {run_dir} is in use by another job: {error}") from None
    if resume == "never":
        return checkpointer, 0, None
    if checkpointer.latest() is not None:
        return (checkpointer, *restore_into(checkpointer, params, adam, owned, model_hash))
    source = None if resume == "auto" else _resume_source(resume)
    if source is None or source.resolve() == (run_dir / "checkpoints").resolve():
        return checkpointer, 0, None  # nothing of its own to resume from
    with Checkpointer(source) as other:
        if other.latest() is None:
            raise ConfigError(f"train config key 'train.resume': {resume!r} holds no committed checkpoint")
        return (checkpointer, *restore_into(other, params, adam, owned, model_hash))


def _resume_source(resume: str) -> Path:
    """The checkpoint directory ``train.resume`` names: a run directory or its ``checkpoints``."""
    given = Path(resume).expanduser()
    source = given / "checkpoints" if (given / "checkpoints" / MARKER).is_file() else given
    if not (source / MARKER).is_file():
        raise ConfigError(f"train config key 'train.resume': {resume!r} is none of auto, never, a run directory "
                          "or a checkpoint directory")
    return source


def restore_into(checkpointer: Checkpointer, params: Any, adam: Adam, owned: slice,
                 model_hash: str) -> tuple[int, Optional[dict]]:
    """Load the newest committed step into ``params`` (all of it) and ``adam`` (the owned slice);
    the step and the rebalance state saved with it (collective)."""
    numel = params.size
    boxes = {"params": ((0,), (numel,)),
             "adam_m": ((owned.start,), (owned.stop - owned.start,)),
             "adam_v": ((owned.start,), (owned.stop - owned.start,))}
    step, state = checkpointer.restore(shards=boxes)
    if state.get("model_hash") != model_hash:
        raise ConfigError(f"train config key 'train.resume': the checkpoint of step {step} in "
                          f"{checkpointer.places.directory} was saved by another model, dtype or seed "
                          f"({state.get('model_hash')} against this config's {model_hash}); resume=never starts afresh")
    xp = get_xp(params)
    for key, target in zip(ARRAYS, (params, adam.m, adam.v)):
        target[...] = xp.asarray(np.asarray(state[key].array, dtype=target.dtype))
    log.info("resumed from step %d (saved on %s)", step, state.get("layout"))
    saved = state.get("layout") or {}
    return step, {key: saved.get(key) for key in ("in_force", "next", "pending")}
