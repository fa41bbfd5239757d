"""The gated-linear-attention token mixer: projections to q, k, v and a per-key-channel log-decay,
sequence mixing of every (sequence, head) in one ``gla_forward``/``gla_backward`` call over All-Scan
(each rank holds a contiguous chunk of every sequence), and the output projection.

The stages are separate functions so the model can time the scans apart from the local work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcrt import get_xp
from hpcrt.collectives import gla_backward, gla_forward

from hpcrt.jobs.train.layers import logsigmoid, sigmoid, weight_grad

# log-decays are logsigmoid(·)/16: decays stay near 1, as in the GLA paper.
GATE_SCALE = 1.0 / 16


@dataclass
class Projected:
    """The mixer's input x [B, L, D], gate pre-activations z [B, L, H·d_k], and per-head q, k, v,
    log-decays g, each [B, H, L, d] and contiguous: the (B, H) batch of gla problems."""

    x: Any
    z: Any
    q: Any
    k: Any
    v: Any
    g: Any


def split_heads(a: Any, heads: int) -> Any:
    """[B, L, H·d] -> contiguous [B, H, L, d]."""
    batch, length, width = a.shape
    return get_xp(a).ascontiguousarray(a.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3))


def merge_heads(a: Any) -> Any:
    """[B, H, L, d] -> [B, L, H·d]."""
    batch, heads, length, width = a.shape
    return a.transpose(0, 2, 1, 3).reshape(batch, length, heads * width)


def _q_scale(p: dict, heads: int) -> float:
    return (p["wq"].shape[1] // heads) ** -0.5


def project(p: dict, x: Any, heads: int) -> Projected:
    """q = x Wq / √d_k, k = x Wk, v = x Wv, g = logsigmoid(x Wg + bg) / 16, split into heads."""
    z = x @ p["wg"] + p["bg"]
    return Projected(x, z, split_heads((x @ p["wq"]) * _q_scale(p, heads), heads), split_heads(x @ p["wk"], heads),
                     split_heads(x @ p["wv"], heads), split_heads(logsigmoid(z) * GATE_SCALE, heads))


def mix(pr: Projected, *, comm: Any, scan: str) -> tuple:
    """(outputs [B, H, L, d_v], the states entering this rank's chunk [B, H, d_k, d_v]) by one
    gla_forward over the batch of (sequence, head) problems."""
    return gla_forward(pr.q, pr.k, pr.v, pr.g, comm=comm, algorithm=scan, return_state=True)


def mix_backward(pr: Projected, states: Any, dout: Any, *, comm: Any, scan: str) -> tuple:
    """(dq, dk, dv, dg), each shaped like its input, by one gla_backward from the forward's states."""
    return gla_backward(pr.q, pr.k, pr.v, pr.g, dout, comm=comm, algorithm=scan, incoming_state=states)


def project_backward(p: dict, grads: dict, pr: Projected, dq: Any, dk: Any, dv: Any, dg: Any) -> Any:
    """Write the projections' gradients into ``grads`` and return ∂loss/∂x."""
    heads = pr.q.shape[1]
    dz = merge_heads(dg) * GATE_SCALE * sigmoid(-pr.z)
    dproj = {"wq": merge_heads(dq) * _q_scale(p, heads), "wk": merge_heads(dk), "wv": merge_heads(dv), "wg": dz}
    grads["bg"][...] = dz.reshape(-1, dz.shape[-1]).sum(axis=0)
    dx = 0
    for name, dy in dproj.items():
        grads[name][...] = weight_grad(pr.x, dy)
        dx = dx + dy @ p[name].T
    return dx


def output(p: dict, out: Any) -> Any:
    """Heads concatenated, then the output projection: [B, L, D]."""
    return merge_heads(out) @ p["wo"]


def output_backward(p: dict, grads: dict, out: Any, dy: Any) -> Any:
    """Write Wo's gradient and return ∂loss/∂outputs [B, H, L, d_v]."""
    grads["wo"][...] = weight_grad(merge_heads(out), dy)
    return split_heads(dy @ p["wo"].T, out.shape[1])
