"""Private implementation of hpcrt.collectives."""
