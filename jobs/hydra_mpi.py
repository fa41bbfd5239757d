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
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import hpcrt
from hpcrt.core import abort
from hpcrt.core.config import resolve_config
from hpcrt.core.launcher import read_launch_env
from hpcrt.core.rundir import DEFAULT_ROOT, agree_run_dir
from hpcrt.monitor import MonitorConfig

RUN_DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def register_runtime_and_monitor_configs(config_dir: Path = CONFIG_DIR) -> None:
    """The runtime's and the monitor's schemas as the config groups ``runtime`` and ``monitor``
    (option ``default`` each), so any app's defaults list can name either; and ``hydra_mpi`` (the
    per-rank Hydra settings) for an app whose config directory has none of its own."""
    store = ConfigStore.instance()
    store.store(group="runtime", name="default", node=hpcrt.RuntimeConfig)
    store.store(group="monitor", name="default", node=MonitorConfig)
    if not (config_dir / "hydra_mpi.yaml").exists():
        store.store(name="hydra_mpi", node=OmegaConf.load(CONFIG_DIR / "hydra_mpi.yaml"), package="_global_")


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


def _first_point(line: str, override: Any) -> str:
    """A sweep override (``k=1,2``) as its first point (``k=1``); any other as given."""
    if not override.is_sweep_override():
        return line
    return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"


def _one_line(error: Exception) -> str:
    """Hydra's several-line message in one line (a heading's indented options joined by commas),
    without its search path and stack-trace hints."""
    parts: list[str] = []
    cause = f"\n{error.__cause__}" if error.__cause__ is not None else ""
    for line in f"{error}{cause}".splitlines():
        if line.startswith(("Config search path", "Set the environment variable", "    full_key", "    object_type")):
            break
        if line[:1].isspace() and line.strip() and parts and parts[-1].endswith(":"):
            parts[-1] += f" {line.strip()}"
        elif line[:1].isspace() and line.strip() and parts and ":" in parts[-1]:
            parts[-1] += f", {line.strip()}"
        elif line.strip():
            parts.append(line.strip())
    return "; ".join(parts)


def check_overrides(config_dir: Path, config_name: str, argv: Sequence[str]) -> None:
    """Raise :class:`hpcrt.ConfigError` for a command-line override Hydra would refuse (an unknown
    key, a bad value, a missing option), naming the key and the valid choices: checked before
    Hydra starts, which would print its own several lines on every rank and exit with 1."""
    lines = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except Exception as error:  # Hydra's OverrideParseException
        raise hpcrt.ConfigError(f"override not understood: {_one_line(error)}") from error
    mine = [_first_point(o.input_line, o) for o in overrides]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            compose(config_name, overrides=mine)
        except Exception as error:  # Hydra's ConfigCompositionException and the like
            unknown = re.search(r"Could not override '([^']+)'", str(error))
            if unknown is None:
                raise hpcrt.ConfigError(_one_line(error)) from error
            key = unknown.group(1)
            parent = key.rpartition(".")[0]
            base = OmegaConf.to_container(compose(config_name), resolve=False)
            known = sorted(k.rpartition(".")[2] for k in _key_paths(base) if k.rpartition(".")[0] == parent)
            given = next(line for line in mine if line.split("=", 1)[0] == key)
            raise hpcrt.ConfigError(f"config key '{key}' (from {given}) is unknown; known keys"
                                    f"{' of ' + repr(parent) if parent else ''}: {', '.join(known)}") from error


_ERROR_LOG: dict = {}
"""Where the running task's user mistakes are recorded: ``log_dir`` and ``debug`` (see :func:`say_once_and_exit`)."""


def _note_error_log(cfg: DictConfig) -> None:
    """The task's ``runtime`` settings (environment included) say whether tracebacks go to the
    run directory's ``logs/`` and to the console (log_level DEBUG)."""
    try:
        runtime = resolve_config(cfg.get("runtime"))
    except hpcrt.ConfigError:
        runtime = None
    debug = (runtime.log_level if runtime else os.environ.get("HPCRT_LOG_LEVEL", "")).upper() == "DEBUG"
    logs = runtime is not None and runtime.log_files and HydraConfig.initialized()
    _ERROR_LOG.update(log_dir=Path(HydraConfig.get().runtime.output_dir) / "logs" if logs else None, debug=debug)


class CheckedTask:
    """The app's task behind the check of added keys, saying any user mistake once. A module-level
    object, so that a launcher that pickles the task (hydra-submitit-launcher) carries no MPI handle
    to another process."""

    def __init__(self, task: Callable[[Any], Any], job: str, config_name: str):
        self.task, self.job, self.config_name = task, job, config_name

    def __call__(self, cfg: DictConfig) -> Any:
        _note_error_log(cfg)
        try:
            refuse_added_keys(cfg, self.config_name)
            return self.task(cfg)
        except abort.USER_MISTAKES as error:
            say_once_and_exit(self.job, error)


class RuntimeTask:
    """A user's task run with the runtime initialized from the config's ``runtime`` node (its run
    directory Hydra's, shared by all ranks) and finalized after; a crash aborts the whole job."""

    def __init__(self, task: Callable[[DictConfig], Any]):
        self.user_task = task  # not ``task``: CheckedTask takes this object's attributes (update_wrapper)

    def __call__(self, cfg: DictConfig) -> Any:
        settings = OmegaConf.to_container(cfg.runtime, resolve=True) if "runtime" in cfg else {}
        settings["run_dir"] = settings.get("run_dir") or HydraConfig.get().runtime.output_dir
        hpcrt.init(settings)
        try:
            result = self.user_task(cfg)
        except abort.USER_MISTAKES:
            raise
        except Exception:
            abort.crash_exit()  # one rank's traceback, and the whole job ends (Hydra would go on)
        hpcrt.finalize()
        return result


def say_once_and_exit(job: str, error: BaseException) -> NoReturn:
    """Every rank found the same user mistake: rank 0 says it in one line, every rank exits with 2
    (see :func:`hpcrt.core.abort.say_once_and_exit`); its traceback goes to the run's ``logs/``."""
    abort.say_once_and_exit(job, error, _ERROR_LOG.get("log_dir"), _ERROR_LOG.get("debug", False))


def mpi_hydra_main(job: str, config_name: str, task: Callable[[Any], Any], config_dir: Path = CONFIG_DIR) -> None:
    """Run ``task`` as the Hydra app ``config_name`` (in ``config_dir``, by default ``jobs/conf``) on
    every rank of the job.

    The config directory is given as an absolute path, so the app finds it whichever module
    defines ``task`` and however hpcrt is installed. A user mistake — an override Hydra refuses, a
    key added with ``+key=``, or a bad setting, topology file or launcher the task finds — is said
    once by rank 0 and every rank exits with status 2.
    """
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    abort.prepare_agreement(world)
    register_runtime_and_monitor_configs(config_dir)
    register_rank_resolver(world.rank)
    try:
        check_overrides(config_dir, config_name, sys.argv[1:])
        sys.argv[1:] = with_run_dir(sys.argv[1:], world, job)
    except (hpcrt.ConfigError, OSError) as error:  # raised on every rank alike
        say_once_and_exit(job, error)
    checked = functools.update_wrapper(CheckedTask(task, job, config_name), task)
    hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(checked)()


def main(config_path: str, config_name: str, job: Optional[str] = None) -> Callable[[Callable], Callable[[], None]]:
    """Make ``task(cfg)`` an hpcrt Hydra app: ``@hpcrt.jobs.main(config_path="conf", config_name="app")``.

    ``config_path`` is relative to the file defining ``task`` (as with ``hydra.main``); its configs
    may name ``hydra_mpi``, ``runtime: default`` and ``monitor: default`` in their defaults list. All
    ranks share one run directory, ``hpcrt-runs/<job>/<job id or date-time>`` (``job``: default
    ``config_name``), where only rank 0 writes ``.hydra``; the runtime is initialized from the
    config's ``runtime`` node before ``task`` runs and finalized after; a user mistake is said once
    and every rank exits with 2, a crash aborts the job with the failing rank's traceback.
    """
    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], None]:
        config_dir = (Path(inspect.getfile(task)).resolve().parent / config_path).resolve()
        runner = functools.update_wrapper(RuntimeTask(task), task)

        @functools.wraps(task)
        def run() -> None:
            mpi_hydra_main(job or config_name, config_name, runner, config_dir)
        return run
    return decorate
