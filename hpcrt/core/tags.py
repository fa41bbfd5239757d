"""Every MPI point-to-point tag hpcrt sends with, in one table: two components' messages on one
communicator can never match each other, and a test checks that no module claims a tag of its own."""

LINK_PROBE = 7001
"""The cost model's ping-pongs and ring shifts (hpcrt.costmodel)."""
RING = 7100
"""The ring engine's one-way ring; RING + 1 and RING + 2 are the bidirectional ring's two lanes."""
RING_LANES = 3
RING_ATTENTION_K, RING_ATTENTION_V = 7201, 7202
"""Ring attention's travelling key and value blocks."""
TOKEN_RING_Q, TOKEN_RING_OUT, TOKEN_RING_LSE = 7301, 7302, 7303
"""TokenRing attention's travelling queries and the partial results sent back."""
SCAN_FORWARD, SCAN_REVERSE = 0x5CA1, 0x5CA2
"""All-Scan's prefix and suffix messages."""
CHECKPOINT_RESTORE = 0x4B7
"""Rank images sent to the ranks that restore them."""
CHECKPOINT_PARTNER = 0x4B8
"""The partner level's copies of another node's rank files."""
CUDA_AWARE_CHECK = 7401
"""The device buffers ranks exchange at init to confirm that MPI is CUDA-aware."""


def claimed() -> dict[str, range]:
    """Every tag range above by name (a single tag is a range of one)."""
    table = {name: range(value, value + 1) for name, value in globals().items()
             if name.isupper() and isinstance(value, int) and name != "RING_LANES"}
    table["RING"] = range(RING, RING + RING_LANES)
    return table
