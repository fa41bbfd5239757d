"""``python -m hpcrt.jobs.train``: a gated-linear-attention language model trained on dp × sp
ranks — sequence chunks joined by All-Scan, gradients reduced by the rings or the ZeRO-style
partitioner, the monitor on, asynchronous checkpoints and exact resume."""
