"""The training state in a checkpoint — parameters and Adam moments as shards of their flat
global buffers, the step and the model's hash — and its restore on any layout or rank count."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hpcrt import ConfigError, get_xp
from hpcrt.checkpoint import Checkpointer, Shard

from .optim import Adam

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


def checkpoint_directory(run_dir: Path, resume: str) -> tuple[Path, Optional[Path]]:
    """(where this job saves, where it resumes from or None) for ``train.resume``."""
    own = run_dir / "checkpoints"
    if resume == "never":
        return own, None
    if resume == "auto":
        return own, own
    given = Path(resume).expanduser()
    source = given / "checkpoints" if (given / "checkpoints").is_dir() else given
    if not source.is_dir():
        raise ConfigError(f"train config key 'train.resume': {resume!r} is neither auto, never nor a directory")
    return own, source


def restore_into(checkpointer: Checkpointer, params: Any, adam: Adam, owned: slice, model_hash: str) -> int:
    """Load the newest committed step into ``params`` (all of it) and ``adam`` (the owned slice);
    the step, or 0 when there is nothing to resume (collective)."""
    if checkpointer.latest() is None:
        return 0
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
    return step
