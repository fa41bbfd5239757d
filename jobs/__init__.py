"""hpcrt.jobs: Hydra applications — ``train`` (the GLA language model on dp × sp ranks, the main
job), ``bench`` (collective microbenchmarks) — and ``make_tokens`` for the train job's token files."""

__all__: list = []
