"""The training job's model: a gated-linear-attention language model with a hand-written backward,
its parameters in one flat buffer (what the ZeRO partitioner shards and the checkpointer saves).

Blocks are x += GLA(RMSNorm(x)); x += MLP(RMSNorm(x)), then RMSNorm, LM head and cross-entropy.
Each rank holds a contiguous chunk of every sequence; the GLA state crosses ranks by All-Scan."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from hpcrt import get_xp

from hpcrt.jobs.train import layers, mixer

INIT_STD = 0.02
# Initial per-channel decays exp(logsigmoid(bg)/16) are spread over this range (long memories).
INIT_DECAYS = (0.9, 0.999)


@dataclass(frozen=True)
class ModelShape:
    """Sizes of the model: vocabulary, widths, heads and depth."""

    vocab: int
    d_model: int
    heads: int
    d_k: int
    d_v: int
    layers: int
    d_ff: int


def _block_shapes(s: ModelShape) -> tuple:
    hk, hv = s.heads * s.d_k, s.heads * s.d_v
    return (("norm1", (s.d_model,)), ("wq", (s.d_model, hk)), ("wk", (s.d_model, hk)), ("wv", (s.d_model, hv)),
            ("wg", (s.d_model, hk)), ("bg", (hk,)), ("wo", (hv, s.d_model)), ("norm2", (s.d_model,)),
            ("w1", (s.d_model, s.d_ff)), ("w2", (s.d_ff, s.d_model)))


@dataclass(frozen=True)
class ParamLayout:
    """Name -> (offset, shape) of every parameter in the flat buffer, in one canonical order."""

    entries: tuple  # ((name, offset, shape), ...)

    @classmethod
    def of(cls, shape: ModelShape) -> "ParamLayout":
        """The layout of ``shape``'s parameters: embedding, blocks in order, final norm, head."""
        named = [("embed", (shape.vocab, shape.d_model))]
        named += [(f"blocks.{i}.{name}", dims) for i in range(shape.layers) for name, dims in _block_shapes(shape)]
        named += [("norm_f", (shape.d_model,)), ("head", (shape.d_model, shape.vocab))]
        offsets = np.cumsum([0] + [int(np.prod(dims)) for _, dims in named])
        return cls(tuple((name, int(offset), dims) for (name, dims), offset in zip(named, offsets)))

    @property
    def names(self) -> tuple:
        return tuple(name for name, _, _ in self.entries)

    @property
    def numel(self) -> int:
        name, offset, dims = self.entries[-1]
        return offset + int(np.prod(dims))

    def views(self, flat: Any) -> dict:
        """Reshaped views into ``flat`` (no copy, same array module)."""
        return {name: flat[offset:offset + int(np.prod(dims))].reshape(dims) for name, offset, dims in self.entries}

    def blocks(self, views: dict, layers: int) -> list:
        """Per block, its views keyed by short name ("wq", "norm1", ...)."""
        return [{name.split(".")[-1]: view for name, view in views.items() if name.startswith(f"blocks.{i}.")}
                for i in range(layers)]


def init_params(shape: ModelShape, seed: int, dtype: str, xp: Any) -> Any:
    """The flat initial parameters, identical on every rank for one seed: weights N(0, 0.02)
    (output projections scaled by 1/√(2·layers)), gains 1, gate biases giving mild decays."""
    rng = np.random.default_rng(seed)
    layout = ParamLayout.of(shape)
    flat = np.empty(layout.numel)
    decays = np.linspace(*INIT_DECAYS, shape.d_k)
    gate_bias = np.tile(-np.log(np.expm1(-np.log(decays) / mixer.GATE_SCALE)), shape.heads)
    for name, view in layout.views(flat).items():
        kind = name.split(".")[-1]
        if kind.startswith("norm"):
            view[...] = 1.0
        elif kind == "bg":
            view[...] = gate_bias
        else:
            std = INIT_STD / np.sqrt(2 * shape.layers) if kind in ("wo", "w2") else INIT_STD
            view[...] = rng.normal(0.0, std, view.shape)
    return xp.asarray(flat.astype(dtype))


def _nothing(name: str) -> ContextManager:
    return nullcontext()


def _named(layout: ParamLayout, flat: Any, layers: int) -> tuple:
    """(views by full name, per block views by short name) of a flat buffer."""
    views = layout.views(flat)
    return views, layout.blocks(views, layers)


def _forward(shape: ModelShape, views: dict, blocks: list, tokens: Any, targets: Any, sp_comm: Any, scan: str,
             normalizer: int, section: Callable[[str], ContextManager]) -> tuple:
    """(loss, d loss/d logits, the activations the backward needs)."""
    caches: list = []
    with section("forward"):
        x = layers.embed(views["embed"], tokens)
        normed, norm1 = layers.rmsnorm(x, blocks[0]["norm1"])
        projected = mixer.project(blocks[0], normed, shape.heads)
    for i, p in enumerate(blocks):
        with section("scan"):
            out, states = mixer.mix(projected, comm=sp_comm, scan=scan)
        with section("forward"):
            x = x + mixer.output(p, out)
            normed, norm2 = layers.rmsnorm(x, p["norm2"])
            y, mlp = layers.mlp(normed, p["w1"], p["w2"])
            x = x + y
            caches.append((norm1, projected, states, out, norm2, mlp))
            gain = blocks[i + 1]["norm1"] if i + 1 < shape.layers else views["norm_f"]
            normed, norm1 = layers.rmsnorm(x, gain)
            if i + 1 < shape.layers:
                projected = mixer.project(blocks[i + 1], normed, shape.heads)
    with section("forward"):
        loss, dlogits = layers.cross_entropy(normed @ views["head"], targets, 1.0 / normalizer)
    return loss, dlogits, (normed, norm1, caches)


def loss_and_grad(shape: ModelShape, params: Any, tokens: Any, targets: Any, *, sp_comm: Any, scan: str = "auto",
                  normalizer: int, section: Callable[[str], ContextManager] = _nothing) -> tuple[float, Any]:
    """(this rank's share of the loss, its gradient as a flat buffer like params).

    tokens, targets: int arrays [B, L_chunk], this rank's chunk of B sequences (targets already
    shifted). The loss is the cross-entropy summed over this rank's tokens divided by
    ``normalizer`` (the step's global token count), so summing loss and gradient over all ranks
    (dp × sp) gives the global batch's mean loss and its exact gradient. ``section(name)`` times
    the local work as "forward"/"backward" and the GLA calls as "scan", never nested."""
    layout = ParamLayout.of(shape)
    views, blocks = _named(layout, params, shape.layers)
    loss, dlogits, (normed, norm_f, caches) = _forward(shape, views, blocks, tokens, targets, sp_comm, scan,
                                                       normalizer, section)
    grad = get_xp(params).zeros_like(params)
    grads, block_grads = _named(layout, grad, shape.layers)
    with section("backward"):
        grads["head"][...] = layers.weight_grad(normed, dlogits)
        dx = layers.rmsnorm_backward(views["norm_f"], norm_f, dlogits @ views["head"].T, grads["norm_f"])
    for i in reversed(range(shape.layers)):
        p, g = blocks[i], block_grads[i]
        norm1, projected, states, out, norm2, mlp = caches[i]
        with section("backward"):
            dnormed = layers.mlp_backward(p["w1"], p["w2"], mlp, dx, g["w1"], g["w2"])
            dx = dx + layers.rmsnorm_backward(p["norm2"], norm2, dnormed, g["norm2"])
            dout = mixer.output_backward(p, g, out, dx)
        with section("scan"):
            dq, dk, dv, dg = mixer.mix_backward(projected, states, dout, comm=sp_comm, scan=scan)
        with section("backward"):
            dnormed = mixer.project_backward(p, g, projected, dq, dk, dv, dg)
            dx = dx + layers.rmsnorm_backward(p["norm1"], norm1, dnormed, g["norm1"])
    with section("backward"):
        layers.embed_backward(tokens, dx, grads["embed"])
    return loss, grad


def loss(shape: ModelShape, params: Any, tokens: Any, targets: Any, *, sp_comm: Any, scan: str = "auto",
         normalizer: int) -> float:
    """This rank's share of the loss, forward only (evaluation; finite-difference checks)."""
    views, blocks = _named(ParamLayout.of(shape), params, shape.layers)
    return _forward(shape, views, blocks, tokens, targets, sp_comm, scan, normalizer, _nothing)[0]
