"""Adam on the slice of the flat parameter buffer a rank owns, and the two ways a rank comes to
own it: the whole buffer with gradients all-reduced (``zero=none``), or a primary shard of the
ZeRO-style partition with gradients reduce-scattered and parameters all-gathered."""

from __future__ import annotations

from typing import Any, Optional

from hpcrt import ConfigError, get_xp
from hpcrt.collectives import HierarchicalPartition, PartitionLevelError, allreduce

from hpcrt.jobs.train.layout import split


class Adam:
    """Adam (Kingma & Ba) on one flat slice; element-wise, so a sharded run updates each element
    exactly as a replicated one does."""

    def __init__(self, size: int, like: Any, lr: float, beta1: float, beta2: float, eps: float):
        xp = get_xp(like)
        self.m = xp.zeros(size, dtype=like.dtype)
        self.v = xp.zeros(size, dtype=like.dtype)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps

    def update(self, params: Any, grad: Any, step: int) -> None:
        """Step ``step`` (1-based) of ``params`` in place from ``grad``."""
        xp = get_xp(params)
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * grad * grad
        m_hat = self.m / (1 - self.beta1 ** step)
        v_hat = self.v / (1 - self.beta2 ** step)
        params -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


class Replicated:
    """``zero=none``: every rank owns the whole buffer; gradients are all-reduced over the world."""

    def __init__(self, numel: int, comm: Any, algorithm: str):
        self.comm, self.algorithm = comm, algorithm
        self.owned = slice(0, numel)
        start, stop = split(numel, comm.size)[comm.rank]
        self.saved = slice(start, stop)
        """The slice this rank writes to checkpoints (the state is the same on every rank)."""

    def reduce(self, grad: Any) -> Any:
        """The summed gradient of the owned slice."""
        return allreduce(grad, "sum", comm=self.comm, algorithm=self.algorithm)

    def gather(self, params: Any) -> None:
        """Nothing to gather: every rank updated the whole buffer."""

    def free(self) -> None:
        """Nothing to release."""


class Sharded:
    """``zero=flat|hpz|3level``: a rank owns its primary shard of the partition; for hpz the
    parameters are gathered from the secondary (node-local) partition."""

    def __init__(self, numel: int, comm: Any, levels: str, like: Any):
        self.partition = HierarchicalPartition(numel, levels=levels, comm=comm, dtype=like.dtype)
        self.owned = self.saved = self.partition.primary
        secondary = self.partition.secondary
        self._secondary: Optional[Any] = None
        if levels == "hpz" and secondary is not None:
            self._secondary = get_xp(like).empty(secondary.stop - secondary.start, dtype=like.dtype)

    def reduce(self, grad: Any) -> Any:
        """This rank's primary shard of the summed gradient (``grad`` is used as the work buffer)."""
        return self.partition.reduce_scatter_grads(grad, "sum", inplace=True)

    def gather(self, params: Any) -> None:
        """Every rank's updated shard into ``params``, the full buffer the next forward reads."""
        primary = params[self.owned]
        if self._secondary is None:
            self.partition.allgather_params(primary, out=params)
            return
        self.partition.refresh_secondary(primary, out=self._secondary)
        self.partition.allgather_secondary(self._secondary, out=params)

    def free(self) -> None:
        """Release the partition's communicators (collective)."""
        self.partition.free()


def make_sync(zero: str, numel: int, comm: Any, allreduce_algorithm: str, like: Any) -> Replicated | Sharded:
    """The gradient and parameter exchange of ``parallel.zero`` (collective)."""
    if zero == "none":
        return Replicated(numel, comm, allreduce_algorithm)
    try:
        return Sharded(numel, comm, zero, like)
    except PartitionLevelError as error:  # the topology's, so the same on every rank
        raise ConfigError(f"train config key 'parallel.zero': {zero} does not fit this topology: {error}") from None
