"""The monitor's configuration: validation names the bad key; environment overrides and fault
specs parse; the dataclass composes as a Hydra/OmegaConf structured config."""

import pytest
from omegaconf import OmegaConf

from hpcrt import ConfigError
from hpcrt.monitor import FaultSpec, MonitorConfig, resolve_monitor_config


@pytest.mark.parametrize("key, value", [
    ("collective_timeout_s", -1.0),
    ("section_timeout_s", -0.5),
    ("threshold", 0.0),
    ("threshold", 1.5),
    ("report_every", 0),
    ("heartbeat_interval_s", 0),
    ("hang_actions", ["log", "reboot"]),
    ("straggler_actions", ["shrink"]),
    ("abort_exit_code", 0),
    ("faults", ["delay:rank=1,step=3"]),
])
def test_bad_value_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        resolve_monitor_config({key: value}, environ={})


@pytest.mark.parametrize("key", ["threshold", "min_section_ms", "collective_timeout_s", "section_timeout_s",
                                 "heartbeat_interval_s", "heartbeat_timeout_s", "dump_grace_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_setting_is_refused(key, value):
    # a NaN timeout compares false with everything: it would turn hang detection off, or crash the abort
    with pytest.raises(ConfigError, match=f"'{key}'"):
        resolve_monitor_config({key: value}, environ={})
    with pytest.raises(ConfigError, match=f"'{key}'"):
        resolve_monitor_config(None, environ={f"HPCRT_MONITOR_{key.upper()}": str(value)})


@pytest.mark.parametrize("fault", ["delay:rank=0,ms=nan", "delay:rank=0,ms=inf"])
def test_non_finite_delay_is_refused(fault):
    with pytest.raises(ConfigError, match="finite ms"):
        resolve_monitor_config(None, environ={"HPCRT_FAULT": fault})


def test_fault_on_a_rank_the_job_does_not_have_is_refused():
    cfg = resolve_monitor_config(None, environ={"HPCRT_FAULT": "delay:rank=1,step=0,ms=1;kill:rank=4,step=3"})
    assert len(cfg.fault_specs(5)) == 2
    with pytest.raises(ConfigError, match=r"'kill:rank=4,step=3' names rank 4, but the job has ranks 0\.\.3"):
        cfg.fault_specs(4)


def test_mistyped_monitor_variable_is_named():
    with pytest.raises(ConfigError, match="HPCRT_MONITOR_COLECTIVE_TIMEOUT_S is unknown: did you mean "
                                          "HPCRT_MONITOR_COLLECTIVE_TIMEOUT_S"):
        resolve_monitor_config(None, environ={"HPCRT_MONITOR_COLECTIVE_TIMEOUT_S": "5"})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'treshold' is unknown"):
        resolve_monitor_config({"treshold": 0.5}, environ={})


def test_environment_overrides_and_faults():
    cfg = resolve_monitor_config({"threshold": 0.8}, environ={
        "HPCRT_MONITOR_THRESHOLD": "0.6", "HPCRT_MONITOR_REPORT_EVERY": "10",
        "HPCRT_MONITOR_DEATH_ACTIONS": "log,shrink",
        "HPCRT_FAULT": "delay:rank=2,step=5,ms=7.5; kill:rank=1,step=40"})
    assert (cfg.threshold, cfg.report_every, cfg.death_actions) == (0.6, 10, ["log", "shrink"])
    assert cfg.fault_specs() == [FaultSpec("delay", 2, 5, 7.5), FaultSpec("kill", 1, 40)]


@pytest.mark.parametrize("env, key", [
    ({"HPCRT_MONITOR_THRESHOLD": "high"}, "HPCRT_MONITOR_THRESHOLD"),
    ({"HPCRT_MONITOR_CAPACITY": "lots"}, "HPCRT_MONITOR_CAPACITY"),
    ({"HPCRT_MONITOR_THRESHOLD": "2"}, "'threshold'"),
    ({"HPCRT_FAULT": "explode:rank=1"}, "HPCRT_FAULT"),
    ({"HPCRT_FAULT": "stop:step=3"}, "HPCRT_FAULT"),
])
def test_bad_environment_names_the_variable(env, key):
    with pytest.raises(ConfigError, match=key):
        resolve_monitor_config(None, environ=env)


def test_hydra_structured_config_composes():
    schema = OmegaConf.structured(MonitorConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create({"threshold": 0.7, "hang_actions": ["log", "dump"]}))
    cfg = resolve_monitor_config(merged, environ={})
    assert cfg.threshold == 0.7 and cfg.hang_actions == ["log", "dump"]
