"""Private implementation of :mod:`hpcrt.checkpoint`."""
