"""Files the checkpointer owns: atomic commits, the directory lock, level paths, retention and
deletion, and reading what others may have written."""
