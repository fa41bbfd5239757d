"""hpcrt.checkpoint: multi-level asynchronous checkpointing to HDF5 (memory, node-local disk,
partner copy on another node, global directory), with an atomic commit protocol, checksums,
fallback on restore and restart on a different number of ranks."""

from hpcrt.checkpoint.errors import (CheckpointError, CheckpointNotFoundError, FormatVersionError,
                                     NotACheckpointDirectoryError, StateError)
from hpcrt.checkpoint.files.lock import DirectoryLockedError
from hpcrt.checkpoint.format.entries import Shard
from hpcrt.checkpoint.format.hdf5 import FORMAT_VERSION
from hpcrt.checkpoint.save.checkpointer import Checkpointer

__all__: list = ["Checkpointer", "Shard", "CheckpointError", "CheckpointNotFoundError", "FormatVersionError",
                 "NotACheckpointDirectoryError", "DirectoryLockedError", "StateError", "FORMAT_VERSION"]
