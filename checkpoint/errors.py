"""The checkpointer's exceptions: one base class so callers can catch them all."""


class CheckpointError(RuntimeError):
    """A save or restore failed; the message names the step, level and rank(s) involved."""


class CheckpointNotFoundError(CheckpointError):
    """No committed checkpoint that every rank can read and verify."""


class NotACheckpointDirectoryError(CheckpointError):
    """The directory exists but holds no hpcrt checkpoint marker."""


class FormatVersionError(CheckpointError):
    """The checkpoint was written by a newer format than this hpcrt reads."""


class StateError(TypeError):
    """The state passed to ``save()`` is not a dict of arrays and JSON-able values, or ranks disagree."""
