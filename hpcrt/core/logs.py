"""Logging with rank-prefixed records: rank 0 (and warnings of every rank) to the console,
every rank to its own file in the run directory."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Optional

LOGGER_NAME = "hpcrt"
_FORMAT = "%(asctime)s [rank %(rank)s/%(size)s %(node)s] %(levelname)s %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, size: int, node: str):
        super().__init__()
        self.fields = {"rank": rank, "size": size, "node": node}

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            setattr(record, key, value)
        return True


def rank_log_file(log_dir: Path, rank: int) -> Path:
    """The log file of ``rank`` in ``log_dir``."""
    return log_dir / f"rank-{rank:05d}.log"


def record_traceback(log_dir: Optional[Path], rank: int, error: BaseException) -> None:
    """Append ``error``'s traceback to the rank's log file (none without ``log_dir``): a user mistake
    is said in one line on the console, its traceback kept here for whoever needs it."""
    if log_dir is None:
        return
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(rank_log_file(log_dir, rank), "a") as log:
            log.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except OSError:
        pass  # the console still has the one line


def setup_logging(rank: int, size: int, node: str, level: str, log_dir: Optional[Path]) -> list:
    """Attach hpcrt's handlers to the ``hpcrt`` logger; returns them so finalize can remove them."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    rank_filter = _RankFilter(rank, size, node)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if rank == 0 else logging.WARNING)
    handlers: list = [console]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(rank_log_file(log_dir, rank)))
    for handler in handlers:
        handler.addFilter(rank_filter)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    return handlers


def teardown_logging(handlers: list) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
