"""hpcrt.checkpoint: multi-level asynchronous checkpointing to HDF5 (memory, node-local disk,
partner copy on another node, global directory), with an atomic commit protocol, checksums,
fallback on restore and restart on a different number of ranks."""

from ._src.checkpointer import Checkpointer
from ._src.errors import (CheckpointError, CheckpointNotFoundError, FormatVersionError,
                          NotACheckpointDirectoryError, StateError)
from ._src.format import FORMAT_VERSION
from ._src.lock import DirectoryLockedError
from ._src.state import Shard

__all__: list = ["Checkpointer", "Shard", "CheckpointError", "CheckpointNotFoundError", "FormatVersionError",
                 "NotACheckpointDirectoryError", "DirectoryLockedError", "StateError", "FORMAT_VERSION"]
