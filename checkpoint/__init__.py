"""hpcrt.checkpoint: multi-level asynchronous checkpointing to HDF5."""

__all__: list = []
