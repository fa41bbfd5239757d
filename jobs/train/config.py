"""The training job's settings: the ``model``, ``data``, ``parallel``, ``train`` and ``checkpoint``
nodes of ``conf/train.yaml`` checked into dataclasses, every bad value a :class:`hpcrt.ConfigError`
naming its key, before any rank starts work."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any, Mapping, Optional

from hpcrt import ConfigError, signal_name

from hpcrt.jobs.train.model import ModelShape

DTYPES = ("float32", "float64")
SCANS = ("auto", "pipeline", "allgather", "ring", "mpi")
ZEROS = ("none", "flat", "hpz", "3level")
ALLREDUCES = ("auto", "ring", "bidir_ring", "mpi")
BALANCES = ("none", "static", "monitor")
DATA_KINDS = ("markov", "tokens")
SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGXCPU")
NODES = ("model", "data", "parallel", "train", "checkpoint", "stop", "slurm")


@dataclass(frozen=True)
class Parallel:
    """The dp × sp layout, the algorithms that join it, and how the batch is shared among ranks."""

    dp: int
    sp: int
    scan: str
    zero: str
    allreduce: str
    balance: str
    """none: equal shares; static: by ``weights`` (else GPU ranks ``gpu_weight``); monitor: online."""
    weights: Optional[tuple]
    gpu_weight: float
    rebalance_every: int
    rebalance_threshold: float
    rebalance_max_factor: float


@dataclass(frozen=True)
class Train:
    """The optimisation run: steps, batch, Adam, logging and resume."""

    steps: int
    batch: int
    seq_len: int
    lr: float
    beta1: float
    beta2: float
    eps: float
    seed: int
    log_every: int
    resume: str
    monitor: bool


@dataclass(frozen=True)
class Checkpointing:
    """How often the job checkpoints, how much it keeps, and whether saves block the loop."""

    every: int
    keep: int
    blocking: bool


@dataclass(frozen=True)
class Stopping:
    """When the job stops early — on a signal or a spent time budget — and how often it may requeue."""

    signals: tuple[str, ...]
    max_minutes: float
    grace_s: float
    max_requeues: int


@dataclass(frozen=True)
class Settings:
    """Everything the job runs with."""

    shape: ModelShape
    dtype: str
    data: dict
    parallel: Parallel
    train: Train
    checkpoint: Checkpointing
    stop: Stopping

    def model_hash(self) -> str:
        """What a checkpoint must match to be resumed: the model, its dtype and the seed (the
        layout may differ: restore reshards)."""
        text = json.dumps({"shape": asdict(self.shape), "dtype": self.dtype, "seed": self.train.seed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Node:
    """One config node's values, each read once and checked, errors naming ``node.key``."""

    def __init__(self, config: Mapping[str, Any], node: str, keys: tuple[str, ...]):
        self.name, self.raw = node, config.get(node)
        if not isinstance(self.raw, Mapping):
            raise ConfigError(f"train config key '{node}': expected a mapping, got {self.raw!r}")
        unknown = sorted(set(self.raw) - set(keys))
        if unknown:
            raise ConfigError(f"train config key '{node}.{unknown[0]}': unknown; expected one of {', '.join(keys)}")

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"train config key '{self.name}.{key}': expected {expected}, got {self.raw.get(key)!r}")

    def integer(self, key: str, minimum: int) -> int:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}")
        return int(value)

    def number(self, key: str, low: float, high: float = math.inf) -> float:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, Real) or not low <= value < high:
            raise self.fail(key, f"a finite number in [{low}, {high})")
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.raw.get(key)
        if value not in choices:
            raise self.fail(key, f"one of {', '.join(choices)}")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if not isinstance(value, str) or not value or value == "???":  # ???: OmegaConf's missing value
            raise self.fail(key, "a non-empty string")
        return value


def parse_settings(config: Mapping[str, Any], world: int) -> Settings:
    """The job's settings for a ``world``-rank job, or a ConfigError naming the first bad key."""
    unknown = sorted(set(config) - set(NODES) - {"runtime", "monitor", "hydra"})
    if unknown:
        raise ConfigError(f"train config key '{unknown[0]}': unknown; expected one of {', '.join(NODES)}")
    model = _Node(config, "model", ("vocab", "d_model", "heads", "d_k", "d_v", "layers", "d_ff", "dtype"))
    shape = ModelShape(vocab=model.integer("vocab", 2), d_model=model.integer("d_model", 1),
                       heads=model.integer("heads", 1), d_k=model.integer("d_k", 1), d_v=model.integer("d_v", 1),
                       layers=model.integer("layers", 1), d_ff=model.integer("d_ff", 1))
    dtype = model.choice("dtype", DTYPES)
    data = _data(config)
    parallel = _parallel(config, world)
    tr = _Node(config, "train", ("steps", "batch", "seq_len", "lr", "beta1", "beta2", "eps", "seed", "log_every",
                                 "resume", "monitor"))
    train = Train(steps=tr.integer("steps", 1), batch=tr.integer("batch", 1), seq_len=tr.integer("seq_len", 1),
                  lr=tr.number("lr", 0.0), beta1=tr.number("beta1", 0.0, 1.0), beta2=tr.number("beta2", 0.0, 1.0),
                  eps=tr.number("eps", 0.0), seed=tr.integer("seed", 0), log_every=tr.integer("log_every", 1),
                  resume=tr.text("resume"), monitor=tr.flag("monitor"))
    if train.seq_len < parallel.sp:
        raise tr.fail("seq_len", f"at least parallel.sp = {parallel.sp} tokens, one per sequence-parallel rank")
    if train.batch < parallel.dp:
        raise tr.fail("batch", f"at least dp = {parallel.dp} sequences, one per data-parallel group")
    if parallel.balance == "monitor" and not train.monitor:
        raise ConfigError("train config key 'parallel.balance': monitor needs train.monitor=true (the monitor's "
                          "straggler windows measure each rank's compute), got train.monitor=false")
    ck = _Node(config, "checkpoint", ("every", "keep", "blocking"))
    checkpoint = Checkpointing(every=ck.integer("every", 0), keep=ck.integer("keep", 1), blocking=ck.flag("blocking"))
    return Settings(shape, dtype, data, parallel, train, checkpoint, _stopping(config))


def _parallel(config: Mapping[str, Any], world: int) -> Parallel:
    """The ``parallel`` node: the dp × sp layout and the balance of shares."""
    par = _Node(config, "parallel", ("sp", "scan", "zero", "allreduce", "balance", "weights", "gpu_weight",
                                     "rebalance_every", "rebalance_threshold", "rebalance_max_factor"))
    sp = par.integer("sp", 1)
    if world % sp:
        raise par.fail("sp", f"a divisor of the job's {world} ranks (dp = ranks / sp)")
    balance = par.choice("balance", BALANCES)
    weights = par.raw.get("weights")
    if weights is not None:
        if (not isinstance(weights, (list, tuple)) or len(weights) != world
                or not all(not isinstance(w, bool) and isinstance(w, Real) and 0 < w < math.inf for w in weights)):
            raise par.fail("weights", f"null or a list of {world} positive numbers, one per rank")
        if balance == "none":
            raise par.fail("weights", "null with parallel.balance=none (weights need static or monitor)")
        weights = tuple(float(w) for w in weights)
    return Parallel(dp=world // sp, sp=sp, scan=par.choice("scan", SCANS), zero=par.choice("zero", ZEROS),
                    allreduce=par.choice("allreduce", ALLREDUCES), balance=balance, weights=weights,
                    gpu_weight=par.number("gpu_weight", 1e-6), rebalance_every=par.integer("rebalance_every", 1),
                    rebalance_threshold=par.number("rebalance_threshold", 0.0),
                    rebalance_max_factor=par.number("rebalance_max_factor", 1.0))


def check_rebalance(parallel: Parallel, report_every: Optional[int]) -> None:
    """With balance=monitor, a rebalance falls at the end of a straggler window: ``rebalance_every``
    must be a multiple of the monitor's ``report_every`` (None: the monitor is off)."""
    if parallel.balance != "monitor":
        return
    if report_every is None:
        raise ConfigError("train config key 'parallel.balance': monitor needs the monitor on (train.monitor=true)")
    if parallel.rebalance_every % report_every:
        raise ConfigError(f"train config key 'parallel.rebalance_every': expected a multiple of "
                          f"monitor.report_every = {report_every} (a rebalance reads a straggler window), "
                          f"got {parallel.rebalance_every}")


def _stopping(config: Mapping[str, Any]) -> Stopping:
    """The ``stop`` and ``slurm`` nodes."""
    stop = _Node(config, "stop", ("signals", "max_minutes", "grace_s"))
    raw = stop.raw.get("signals")
    try:
        signals = tuple(signal_name(s) for s in raw) if isinstance(raw, (list, tuple)) else ("?",)
    except ValueError:
        signals = ("?",)
    if not set(signals) <= set(SIGNALS):
        raise stop.fail("signals", f"a list of signal names among {', '.join(SIGNALS)}")
    slurm = _Node(config, "slurm", ("max_requeues",))
    return Stopping(signals, stop.number("max_minutes", 0.0), stop.number("grace_s", 0.0),
                    slurm.integer("max_requeues", 0))


def _data(config: Mapping[str, Any]) -> dict:
    """The ``data`` node: ``markov`` (branching, chain_seed) or ``tokens`` (path)."""
    kind = config.get("data", {}).get("kind") if isinstance(config.get("data"), Mapping) else None
    if kind not in DATA_KINDS:
        raise ConfigError(f"train config key 'data.kind': expected one of {', '.join(DATA_KINDS)} "
                          f"(choose with data=markov or data=tokens), got {kind!r}")
    if kind == "markov":
        node = _Node(config, "data", ("kind", "branching", "chain_seed"))
        return {"kind": kind, "branching": node.integer("branching", 1), "chain_seed": node.integer("chain_seed", 0)}
    node = _Node(config, "data", ("kind", "path"))
    return {"kind": kind, "path": node.text("path")}
