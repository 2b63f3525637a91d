"""Typed config sections: values are checked and converted once, when the config is resolved."""

from __future__ import annotations

import dataclasses
import os
import pickle
import typing
from pathlib import Path

import pytest
import yaml

import superduperdb
from superduperdb.config import Config, JobsConfig, MasterConfig, Settings, resolve_config
from superduperdb.config.sections import schema
from superduperdb.errors import ConfigError, SuperDuperError

DEFAULTS = Path(superduperdb.__file__).parent / "defaults.yaml"


@pytest.fixture
def dirs(tmp_path: Path) -> dict:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return {"home": tmp_path / "home", "cwd": tmp_path / "work"}


@pytest.fixture
def clean_env(monkeypatch, dirs: dict) -> None:
    for name in list(os.environ):
        if name.startswith("SUPERDUPERDB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.chdir(dirs["cwd"])


def resolve(overrides=None, environ=None, **dirs) -> Config:
    dirs = dirs or {"home": "/nonexistent", "cwd": "/nonexistent"}
    return resolve_config(overrides, environ=environ or {}, **dirs)


def _flat(tree: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


# -- the schema -----------------------------------------------------------------------------------


def test_every_default_key_has_a_type_and_every_type_a_default() -> None:
    assert set(schema()) == _flat(yaml.safe_load(DEFAULTS.read_text()))


def test_sections_are_typed_frozen_dataclasses() -> None:
    cfg = resolve()
    assert isinstance(cfg.settings, Settings)
    assert isinstance(cfg.jobs, JobsConfig) and isinstance(cfg.master, MasterConfig)
    assert dataclasses.is_dataclass(cfg.jobs) and cfg.jobs.__dataclass_params__.frozen
    for path, value, _ in cfg.items():
        spec = schema()[path]
        allowed = (int, float) if spec.type is float else spec.type
        assert (value is None and spec.optional) or (isinstance(value, allowed) and (
            spec.type in (bool, float) or not isinstance(value, bool))), (path, value)
    hints = typing.get_type_hints(JobsConfig)
    assert hints["chunk_size"] is int and hints["wait_timeout"] == float | None


# -- conversion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "given", "value"), [
    ("jobs.chunk_size", "100", 100),
    ("jobs.chunk_size", 100.0, 100),
    ("cluster.timeout", "2.5", 2.5),
    ("cluster.timeout", 3, 3),
    ("master.warm_up", "no", False),
    ("master.warm_up", 1, True),
    ("types.pickle_fallback", "True", True),
    ("cluster.processes", None, None),
    ("cluster.processes", "off", False),
    ("jobs.wait_timeout", None, None),
    ("mongodb.port", "27018", 27018),
    ("data.valid_probability", "0.5", 0.5),
])
def test_values_are_converted_to_the_key_type(path: str, given, value) -> None:
    cfg = resolve({path: given})
    section, key = path.split(".")
    assert cfg[path] == value and type(cfg[path]) is type(value)
    assert getattr(getattr(cfg, section), key) == value and cfg.source(path) == "keyword arguments"


def test_environment_values_have_the_key_type() -> None:
    cfg = resolve(environ={
        "SUPERDUPERDB_JOBS__CHUNK_SIZE": "250",
        "SUPERDUPERDB_CLUSTER__TIMEOUT": "1.5",
        "SUPERDUPERDB_MASTER__WARM_UP": "false",
        "SUPERDUPERDB_MASTER__RESOURCE": "123",  # a string key keeps its text
        "SUPERDUPERDB_MONGODB__HOST": "",
    })
    assert (cfg.jobs.chunk_size, cfg.cluster.timeout, cfg.master.warm_up) == (250, 1.5, False)
    assert cfg.master.resource == "123" and cfg.mongodb.host is None


def test_original_json_with_string_port_and_remote(dirs: dict) -> None:
    (dirs["cwd"] / "config.json").write_text('{"remote": "true", "jobs": {"host": "sched", "port": "8786"}}')
    cfg = resolve(**dirs)
    assert cfg.remote is True and cfg.jobs.port == 8786 and cfg.cluster.address == "tcp://sched:8786"


def test_typed_values_survive_pickling_and_a_round_trip() -> None:
    cfg = resolve({"jobs.chunk_size": "7", "master.epsilon": "0.3"})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert pickle.loads(pickle.dumps(cfg.master)).epsilon == 0.3
    assert resolve(cfg.to_dict()) == cfg  # what a worker's Context does with a job's Target


def test_replace_checks_and_converts(dirs: dict) -> None:
    cfg = resolve()
    assert cfg.replace({"jobs": {"chunk_size": "3"}}, source="cli").jobs.chunk_size == 3
    with pytest.raises(ConfigError) as info:
        cfg.replace({"jobs.chunk_size": "three"}, source="cli")
    assert info.value.key == "jobs.chunk_size" and info.value.source == "cli"


# -- refusals ---------------------------------------------------------------------------------------


def _refused(err: ConfigError, key: str, expected: str, value, source: str) -> str:
    assert isinstance(err, SuperDuperError) and isinstance(err, ValueError)
    assert (err.key, err.expected, err.value, err.source) == (key, expected, value, source)
    message = str(err)
    assert repr(key) in message and expected in message and source in message
    return message


def test_bad_type_from_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"SUPERDUPERDB_JOBS__CHUNK_SIZE": "abc"})
    message = _refused(info.value, "jobs.chunk_size", "an integer", "abc", "environment")
    assert "'abc'" in message and "(str)" in message


def test_bad_type_on_connect(clean_env) -> None:
    with pytest.raises(ConfigError) as info:
        superduperdb.connect("mongomock://typed", cluster=None, config={"cluster.timeout": "x"})
    assert "'x'" in _refused(info.value, "cluster.timeout", "a number", "x", "keyword arguments")
    with pytest.raises(ConfigError) as info:
        superduperdb.connect("mongomock://typed", cluster=None, config={"master": {"warm_up": "maybe"}})
    message = _refused(info.value, "master.warm_up", "true or false", "maybe", "keyword arguments")
    assert "Valid: true, false." in message and info.value.valid == [True, False]


def test_bad_type_in_a_file(dirs: dict) -> None:
    (dirs["cwd"] / "superduperdb.yaml").write_text("jobs: {chunk_size: many}\n")
    with pytest.raises(ConfigError) as info:
        resolve(**dirs)
    _refused(info.value, "jobs.chunk_size", "an integer", "many", str(dirs["cwd"] / "superduperdb.yaml"))


@pytest.mark.parametrize(("path", "value", "expected", "says"), [
    ("jobs.chunk_size", True, "an integer", "not True (bool)"),  # a bool is not a count
    ("jobs.chunk_size", None, "an integer", "not null"),
    ("jobs.chunk_size", [5], "an integer", "not [5] (list)"),
    ("cluster.processes", 3, "true, false or null", "Valid: true, false, null."),
    ("cluster.address", 5, "a string or null", "'tcp://host:8786'"),  # the alternatives
    ("master.epsilon", float("nan"), "a number", "not nan"),
    ("data.valid_probability", 5, "a number", "between 0 and 1"),
    ("jobs.chunk_size", 0, "an integer", ">= 1"),
    ("mongodb.port", 70000, "an integer or null", "between 0 and 65535"),
])
def test_bad_values_are_refused_naming_key_type_and_value(path: str, value, expected: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({path: value})
    err = info.value
    assert err.key == path and err.expected == expected and err.source == "keyword arguments"
    assert err.value is value or err.value == value
    assert repr(path) in str(err) and says in str(err)
