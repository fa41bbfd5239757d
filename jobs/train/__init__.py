"""``python -m hpcrt.jobs.train``: a gated-linear-attention language model trained on dp × sp
ranks — sequence chunks joined by All-Scan, gradients reduced by the rings or the ZeRO-style
partitioner, the monitor on, asynchronous checkpoints and exact resume."""

from hpcrt.jobs.train.config import Settings, parse_settings
from hpcrt.jobs.train.job import Result, train
from hpcrt.jobs.train.model import ModelShape, ParamLayout, init_params, loss, loss_and_grad

__all__ = ["train", "Result", "Settings", "parse_settings", "ModelShape", "ParamLayout", "init_params", "loss",
           "loss_and_grad"]
