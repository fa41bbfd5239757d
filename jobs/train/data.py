"""Training batches that depend only on (seed, step), so a resumed job needs no loader state:
a seeded sparse Markov chain whose entropy rate is known exactly, or windows of a token file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from hpcrt import ConfigError


class Source(Protocol):
    """Where a step's global batch comes from."""

    entropy_floor: Optional[float]
    """The lowest mean cross-entropy (nats per token) any model can reach, when known."""

    def batch(self, seed: int, step: int, batch: int, length: int) -> np.ndarray:
        """``batch`` sequences of ``length`` tokens (int64), the same on every rank."""


class MarkovChain:
    """A random chain over ``vocab`` tokens with ``branching`` successors each (one of them the
    next token, so the chain is irreducible); sequences start from its stationary distribution,
    which makes the entropy rate Σ π_i H(P_i) the floor of the expected loss."""

    def __init__(self, vocab: int, branching: int, chain_seed: int):
        rng = np.random.default_rng(chain_seed)
        branching = min(branching, vocab)
        others = np.array([rng.choice(np.delete(np.arange(vocab), (i + 1) % vocab), branching - 1, replace=False)
                           for i in range(vocab)]).reshape(vocab, branching - 1)
        self.successors = np.concatenate([((np.arange(vocab) + 1) % vocab)[:, None], others], axis=1)
        self.probabilities = rng.dirichlet(np.ones(branching), size=vocab)
        self.cumulative = np.cumsum(self.probabilities, axis=1)
        self.cumulative[:, -1] = 1.0
        self.stationary = _stationary(self.successors, self.probabilities, vocab)
        self.entropy_floor = float(-(self.stationary[:, None] * self.probabilities
                                     * np.log(self.probabilities)).sum())

    def batch(self, seed: int, step: int, batch: int, length: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step])
        tokens = np.empty((batch, length), dtype=np.int64)
        tokens[:, 0] = np.searchsorted(np.cumsum(self.stationary), rng.random(batch) * (1 - 1e-12))
        draws = rng.random((batch, length - 1))
        for t in range(1, length):
            prev = tokens[:, t - 1]
            pick = (self.cumulative[prev] < draws[:, t - 1, None]).sum(axis=1)
            tokens[:, t] = self.successors[prev, pick]
        return tokens


def _stationary(successors: np.ndarray, probabilities: np.ndarray, vocab: int) -> np.ndarray:
    """The stationary distribution of the chain, by power iteration of its lazy form (which has
    the same stationary distribution and converges whatever the chain's period)."""
    matrix = np.zeros((vocab, vocab))
    np.add.at(matrix, (np.repeat(np.arange(vocab), successors.shape[1]), successors.ravel()), probabilities.ravel())
    lazy = 0.5 * (matrix + np.eye(vocab))
    pi = np.full(vocab, 1.0 / vocab)
    for _ in range(100_000):
        nxt = pi @ lazy
        if np.abs(nxt - pi).max() < 1e-15:
            break
        pi = nxt
    return nxt / nxt.sum()


class TokenFile:
    """Windows of a flat uint16 token file (memory-mapped), at offsets drawn from (seed, step)."""

    entropy_floor = None

    def __init__(self, path: str, vocab: int, length: int):
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"train config key 'data.path': {path!r} is not a file "
                              "(make one with python -m hpcrt.jobs.make_tokens TEXT OUT)")
        size = file.stat().st_size
        if size % 2 or size < 2 * length:
            raise ConfigError(f"train config key 'data.path': {path!r} holds {size} bytes; a uint16 token file "
                              f"of at least train.seq_len + 1 = {length} tokens ({2 * length} bytes) is needed")
        self.tokens = np.memmap(file, dtype=np.uint16, mode="r")
        largest = int(self.tokens.max())
        if largest >= vocab:
            raise ConfigError(f"train config key 'model.vocab': {path!r} holds token {largest}; "
                              f"model.vocab must be at least {largest + 1}")

    def batch(self, seed: int, step: int, batch: int, length: int) -> np.ndarray:
        starts = np.random.default_rng([seed, step]).integers(0, len(self.tokens) - length + 1, size=batch)
        return np.stack([self.tokens[s:s + length] for s in starts]).astype(np.int64)


def make_source(data: dict, vocab: int, seq_len: int) -> Source:
    """The source named by the ``data`` settings; its sequences are ``seq_len`` + 1 tokens long
    (inputs and the next-token targets)."""
    if data["kind"] == "markov":
        return MarkovChain(vocab, data["branching"], data["chain_seed"])
    return TokenFile(data["path"], vocab, seq_len + 1)
