"""Runtime configuration: defaults, mappings, HPCRT_* overrides, and errors that name the key."""

import pytest

from hpcrt import ConfigError, RuntimeConfig
from hpcrt.core.config import resolve_config


def test_defaults_and_mapping():
    assert resolve_config(None, environ={}) == RuntimeConfig()
    cfg = resolve_config({"device": "cpu", "log_level": "debug"}, environ={})
    assert (cfg.device, cfg.log_level) == ("cpu", "DEBUG")


def test_environment_overrides_config():
    env = {"HPCRT_DEVICE": "gpu", "HPCRT_LOG_FILES": "0", "HPCRT_STAGING_POOL_MB": "64",
           "HPCRT_TOPOLOGY_FILE": "/x.yaml"}
    cfg = resolve_config({"device": "cpu", "log_files": True}, environ=env)
    assert (cfg.device, cfg.log_files, cfg.staging_pool_mb, cfg.topology_file) == ("gpu", False, 64, "/x.yaml")


def test_omegaconf_node_is_accepted():
    from omegaconf import OmegaConf
    node = OmegaConf.structured(RuntimeConfig(device="cpu"))
    assert resolve_config(node, environ={}).device == "cpu"


@pytest.mark.parametrize("config, env, key", [
    ({"device": "tpu"}, {}, "device"),
    ({"cuda_aware": "maybe"}, {}, "cuda_aware"),
    ({"thread_level": "many"}, {}, "thread_level"),
    ({"staging_pool_mb": 0}, {}, "staging_pool_mb"),
    ({"keep_freed_mb": -1}, {}, "keep_freed_mb"),
    ({}, {"HPCRT_KEEP_FREED_MB": "-5"}, "keep_freed_mb"),
    ({"log_files": "yes"}, {}, "log_files"),
    ({"no_such_key": 1}, {}, "no_such_key"),
    ({}, {"HPCRT_LOG_FILES": "perhaps"}, "HPCRT_LOG_FILES"),
    ({}, {"HPCRT_STAGING_POOL_MB": "lots"}, "HPCRT_STAGING_POOL_MB"),
])
def test_bad_settings_name_the_key(config, env, key):
    with pytest.raises(ConfigError, match=key):
        resolve_config(config, environ=env)


@pytest.mark.parametrize("name, hint", [
    ("HPCRT_LOGFILES", "did you mean HPCRT_LOG_FILES"),
    ("HPCRT_FAULTS", "did you mean HPCRT_FAULT"),
    ("HPCRT_RUNDIR", "did you mean HPCRT_RUN_DIR"),
])
def test_mistyped_variable_is_an_error_naming_it(name, hint):
    with pytest.raises(ConfigError, match=f"environment variable {name} is unknown: {hint}"):
        resolve_config(None, environ={name: "1"})


def test_variables_read_elsewhere_are_not_config_typos():
    env = {"HPCRT_FAULT": "kill:rank=0,step=1", "HPCRT_SRUN_MPI": "pmix", "HPCRT_TEST_ULFM": "1",
           "HPCRT_MONITOR_THRESHOLD": "0.5", "HPCRTX": "not ours"}
    assert resolve_config(None, environ=env) == RuntimeConfig()


@pytest.mark.parametrize("key", ["staging_pool_mb", "keep_freed_mb"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_integer_settings_refuse_non_finite_numbers_and_booleans(key, value):
    with pytest.raises(ConfigError, match=key):
        resolve_config({key: value}, environ={})
