"""Sequence-parallel attention: ring and TokenRing softmax attention, the LSE merge and its kernels,
gated linear attention over All-Scan."""
