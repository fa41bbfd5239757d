"""hpcrt.collectives: custom collectives (All-Scan, rings, hierarchical partitioning, NIC-aware groups)."""

__all__: list = []
