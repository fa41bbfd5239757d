"""The checkpointer: save() returns at once; snapshot, write, vote and commit happen in background threads."""
