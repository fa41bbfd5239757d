"""Forward/backward pairs of the language model's position-wise layers (embedding, RMSNorm, SiLU
MLP, log-sigmoid, cross-entropy), written against ``xp`` so numpy and CuPy ranks run the same code.

Each forward returns its output and what its backward needs; each backward writes the parameter
gradients into the given views and returns the gradient of its input."""

from __future__ import annotations

from typing import Any

from hpcrt import get_xp

RMS_EPS = 1e-6


def one_hot(ids: Any, width: int, like: Any) -> Any:
    """[..., width] rows of ``like``'s dtype with a 1 at each id: gathers and scatters as matmuls,
    which numpy and CuPy both have (no ``add.at``)."""
    xp = get_xp(like)
    return (xp.asarray(ids)[..., None] == xp.arange(width)).astype(like.dtype)


def weight_grad(x: Any, dy: Any) -> Any:
    """∂loss/∂W of y = x @ W, summed over every leading (batch, position) axis."""
    return x.reshape(-1, x.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])


def embed(table: Any, tokens: Any) -> Any:
    """Rows of the embedding table [vocab, d] for int tokens [B, L] -> [B, L, d]."""
    return get_xp(table).take(table, get_xp(table).asarray(tokens), axis=0)


def embed_backward(tokens: Any, dy: Any, grad_table: Any) -> None:
    """Accumulate each position's gradient into its token's row (a one-hot matmul)."""
    grad_table[...] = weight_grad(one_hot(tokens, grad_table.shape[0], dy), dy)


def rmsnorm(x: Any, gain: Any) -> tuple:
    """x / rms(x) · gain over the last axis, and (normalized x, 1/rms) for the backward."""
    xp = get_xp(x)
    inv = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + RMS_EPS)
    normed = x * inv
    return normed * gain, (normed, inv)


def rmsnorm_backward(gain: Any, cache: tuple, dy: Any, grad_gain: Any) -> Any:
    """The input's gradient; the gain's is written into ``grad_gain``."""
    normed, inv = cache
    grad_gain[...] = (dy * normed).reshape(-1, normed.shape[-1]).sum(axis=0)
    dnormed = dy * gain
    return inv * (dnormed - normed * (dnormed * normed).mean(axis=-1, keepdims=True))


def sigmoid(x: Any) -> Any:
    """1 / (1 + e^-x) without overflow for any x."""
    return 0.5 * (1.0 + get_xp(x).tanh(0.5 * x))


def logsigmoid(x: Any) -> Any:
    """log σ(x) = min(x, 0) − log(1 + e^−|x|), stable for large |x|; its derivative is σ(−x)."""
    xp = get_xp(x)
    return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))


def mlp(x: Any, w1: Any, w2: Any) -> tuple:
    """SiLU(x W1) W2, and the activations its backward needs."""
    hidden = x @ w1
    gate = sigmoid(hidden)
    act = hidden * gate
    return act @ w2, (x, hidden, gate, act)


def mlp_backward(w1: Any, w2: Any, cache: tuple, dy: Any, grad_w1: Any, grad_w2: Any) -> Any:
    """The input's gradient; the weights' are written into ``grad_w1`` and ``grad_w2``."""
    x, hidden, gate, act = cache
    grad_w2[...] = weight_grad(act, dy)
    dhidden = (dy @ w2.T) * gate * (1.0 + hidden * (1.0 - gate))
    grad_w1[...] = weight_grad(x, dhidden)
    return dhidden @ w1.T


def cross_entropy(logits: Any, targets: Any, scale: float) -> tuple:
    """(scale · Σ −log softmax(logits)[target] as a float, its gradient w.r.t. logits), with a
    max-shifted log-sum-exp so no exponent overflows."""
    xp = get_xp(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = xp.exp(shifted)
    total = exps.sum(axis=-1, keepdims=True)
    picked = one_hot(targets, logits.shape[-1], logits)
    loss = float((xp.log(total) - (shifted * picked).sum(axis=-1, keepdims=True)).sum()) * scale
    return loss, (exps / total - picked) * scale
