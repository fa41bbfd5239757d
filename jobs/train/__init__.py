"""``python -m hpcrt.jobs.train``: a gated-linear-attention language model trained on dp × sp
ranks — sequence chunks joined by All-Scan, gradients reduced by the rings or the ZeRO-style
partitioner, the monitor on, asynchronous checkpoints and exact resume."""

from .config import Settings, parse_settings
from .job import Result, train
from .model import ModelShape, ParamLayout, init_params, loss, loss_and_grad

__all__ = ["train", "Result", "Settings", "parse_settings", "ModelShape", "ParamLayout", "init_params", "loss",
           "loss_and_grad"]
