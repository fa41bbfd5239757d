"""Hydra applications under MPI: every rank gets the same run directory, agreed before Hydra
starts (Hydra's ``${now:}`` resolves per process), and only rank 0 writes Hydra's own output.

Rank 0 picks the directory and broadcasts it; it is injected into ``sys.argv`` as
``hydra.run.dir`` and ``hydra.sweep.dir``, so a multirun sweep's jobs each get one subdirectory
shared by all ranks. What differs by rank (``hydra.output_subdir``, log levels) is written in
``conf/hydra_mpi.yaml`` with the ``hpcrt_rank0`` resolver, so every rank's command line, and
Hydra's ``multirun.yaml``, are identical.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import hydra
from hydra import compose
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import hpcrt
from hpcrt.core.launcher import read_launch_env
from hpcrt.core.rundir import DEFAULT_ROOT, agree_run_dir
from hpcrt.monitor import MonitorConfig

RUN_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def register_runtime_and_monitor_configs() -> None:
    """The runtime's and the monitor's schemas as the config groups ``runtime`` and ``monitor``
    (option ``default`` each), so any app's defaults list can name either."""
    store = ConfigStore.instance()
    store.store(group="runtime", name="default", node=hpcrt.RuntimeConfig)
    store.store(group="monitor", name="default", node=MonitorConfig)


def register_rank_resolver(rank: int) -> None:
    """``${hpcrt_rank0:a,b}`` is ``a`` on rank 0 and ``b`` (default null) on every other rank."""
    OmegaConf.register_new_resolver("hpcrt_rank0", lambda first, other=None: first if rank == 0 else other,
                                    replace=True)


# A process that runs a pickled task (a hydra-submitit-launcher worker under srun) imports this
# module but never calls mpi_hydra_main: its rank comes from the launcher's environment.
register_rank_resolver(read_launch_env().rank or 0)


def _given(argv: Sequence[str]) -> dict[str, str]:
    """Each ``key=value`` override's key (without ``+``/``~``) and value."""
    return {arg.split("=", 1)[0].lstrip("+~"): arg.split("=", 1)[1] for arg in argv if "=" in arg}


def agree_base_dir(comm: Any, job: str) -> str:
    """``hpcrt-runs/<job>/<Slurm job id or date-time>``, created by rank 0 (a date-time another job
    already has gets a suffix), absolute, on every rank."""
    return str(agree_run_dir(comm, None, root=Path(DEFAULT_ROOT) / job))


def with_run_dir(argv: Sequence[str], comm: Any, job: str) -> list[str]:
    """``argv`` plus the agreed run and sweep directories, unless the user gave them."""
    given = _given(argv)
    missing = [key for key in RUN_DIR_KEYS if key not in given]
    if not missing:
        return list(argv)
    # One of the two given: the other is the same folder (a run directory chosen by hand makes
    # no second, empty one for sweeps).
    chosen = next((given[key] for key in RUN_DIR_KEYS if key in given), None)
    base = str(agree_run_dir(comm, chosen)) if chosen is not None else agree_base_dir(comm, job)
    return [*argv, *(f"{key}={base}" for key in missing)]


def _key_paths(node: Any, prefix: str = "") -> set[str]:
    """Every key of a config tree, dotted (``bench.iters``), without resolving interpolations."""
    if not isinstance(node, dict):
        return set()
    return {p for key, value in node.items()
            for p in (f"{prefix}{key}", *_key_paths(value, f"{prefix}{key}."))}


def refuse_added_keys(cfg: DictConfig, config_name: str) -> None:
    """Raise :class:`hpcrt.ConfigError` for a key that a ``+key=`` or ``++key=`` override added to the
    app's config: like a mistyped plain override, which Hydra refuses, it would be ignored. Config
    groups (``+group=option``) and Hydra's own keys may still be added."""
    hydra_cfg = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    added = [o for o in overrides if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra")
             and o.key_or_group not in hydra_cfg.runtime.choices]
    if not added:
        return
    base = compose(config_name, overrides=[o.input_line for o in overrides if o not in added])
    known = _key_paths(OmegaConf.to_container(base, resolve=False))
    new = sorted(_key_paths(OmegaConf.to_container(cfg, resolve=False)) - known)
    if new:
        key, parent = new[0], new[0].rpartition(".")[0]
        source = next(o.input_line for o in added if f"{o.key_or_group}.".startswith(f"{key}.")
                      or key.startswith(f"{o.key_or_group}."))
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent)
        raise hpcrt.ConfigError(f"config key '{key}' (from {source}) is unknown; known keys"
                                f"{' of ' + repr(parent) if parent else ''}: {', '.join(siblings)}")


class CheckedTask:
    """The app's task behind the check of added keys. A module-level object, so that a launcher
    that pickles the task (hydra-submitit-launcher) carries no MPI handle to another process."""

    def __init__(self, task: Callable[[Any], Any], job: str, config_name: str):
        self.task, self.job, self.config_name = task, job, config_name

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            refuse_added_keys(cfg, self.config_name)
        except hpcrt.ConfigError as error:  # the same overrides, so the same error, on every rank
            say_once_and_exit(self.job, error)
        return self.task(cfg)


def say_once_and_exit(job: str, error: Exception) -> None:
    """Every rank found the same user mistake: rank 0 says it in one line, every rank exits with 2
    (raising SystemExit, not sys.exit: the abort hook would take an agreed exit for a crash)."""
    from mpi4py import MPI
    if MPI.COMM_WORLD.rank == 0:
        print(f"{job}: {error}", file=sys.stderr, flush=True)
    if hpcrt.is_initialized():
        hpcrt.finalize()
    raise SystemExit(2)


def mpi_hydra_main(job: str, config_name: str, task: Callable[[Any], Any]) -> None:
    """Run ``task`` as the Hydra app ``config_name`` (in ``jobs/conf``) on every rank of the job.

    The config directory is given as an absolute path, so the app finds it whichever module
    defines ``task`` and however hpcrt is installed. A key the config does not have, added with
    ``+key=``, is said once by rank 0 and every rank exits with status 2.
    """
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    register_runtime_and_monitor_configs()
    register_rank_resolver(world.rank)
    try:
        sys.argv[1:] = with_run_dir(sys.argv[1:], world, job)
    except OSError as error:  # raised on every rank alike
        say_once_and_exit(job, error)
    checked = functools.update_wrapper(CheckedTask(task, job, config_name), task)
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(checked)()
