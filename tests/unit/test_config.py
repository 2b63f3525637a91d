"""Layered configuration, the ``superduperdb config`` / ``info`` commands, and import time."""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import superduperdb
from superduperdb.cli import main as cli
from superduperdb.config import resolve_config
from superduperdb.errors import ConfigError, ConnectionFailure, SuperDuperError

EVERY_KEY = {
    "mongodb.uri", "mongodb.host", "mongodb.port", "mongodb.timeout_ms", "cluster.address", "jobs.chunk_size",
    "master.host", "master.port", "types.pickle_fallback", "remote", "redis.host",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    (path / ".superduperdb").mkdir(parents=True)
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def clean_env(monkeypatch, home: Path, cwd: Path) -> None:
    """The process environment as a user with no superduperdb config would have it."""
    for name in list(os.environ):
        if name.startswith("SUPERDUPERDB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_home(home: Path, text: str) -> None:
    (home / ".superduperdb" / "config.yaml").write_text(textwrap.dedent(text))


def write_cwd(cwd: Path, text: str) -> None:
    (cwd / "superduperdb.yaml").write_text(textwrap.dedent(text))


def write_json(cwd: Path, data: dict) -> None:
    (cwd / "config.json").write_text(json.dumps(data))


# -- layering ----------------------------------------------------------------------------------


def test_defaults_alone(home: Path, cwd: Path) -> None:
    cfg = resolve_config(home=home, cwd=cwd, environ={})
    assert cfg.mongodb.uri is None and cfg.mongodb.timeout_ms == 5000
    assert cfg.cluster.address == "local" and cfg.types.pickle_fallback is False
    assert {source for _, _, source in cfg.items()} == {"packaged defaults"}
    assert EVERY_KEY <= {path for path, _, _ in cfg.items()}


def test_each_layer_overrides_the_previous(home: Path, cwd: Path) -> None:
    write_home(home, """
        mongodb: {uri: mongomock://home, timeout_ms: 1}
        jobs: {chunk_size: 1, wait_timeout: 1}
        master: {epsilon: 0.1}
        cluster: {n_workers: 1, timeout: 1, threads_per_worker: 1}
        data: {valid_probability: 0.5}
    """)
    write_cwd(cwd, """
        mongodb: {timeout_ms: 2}
        jobs: {chunk_size: 2, wait_timeout: 2}
        cluster: {n_workers: 2, timeout: 2}
        data: {valid_probability: 0.25}
    """)
    write_json(cwd, {"jobs": {"chunk_size": 3}, "cluster": {"n_workers": 3, "timeout": 3}})
    environ = {"SUPERDUPERDB_CLUSTER__N_WORKERS": "4", "SUPERDUPERDB_CLUSTER__TIMEOUT": "4", "HOME": "/x"}
    cfg = resolve_config({"cluster": {"timeout": 5}}, home=home, cwd=cwd, environ=environ)
    home_file, cwd_file, json_file = (
        str(home / ".superduperdb" / "config.yaml"), str(cwd / "superduperdb.yaml"), str(cwd / "config.json"),
    )
    expected = {
        "master.epsilon": (0.1, home_file),
        "mongodb.uri": ("mongomock://home", home_file),
        "data.valid_probability": (0.25, cwd_file),
        "mongodb.timeout_ms": (2, cwd_file),
        "jobs.wait_timeout": (2, cwd_file),
        "jobs.chunk_size": (3, json_file),
        "cluster.n_workers": (4, "environment"),
        "cluster.timeout": (5, "keyword arguments"),
        "cluster.threads_per_worker": (1, home_file),
        "master.exact_threshold": (20000, "packaged defaults"),
    }
    assert {path: (cfg[path], cfg.source(path)) for path in expected} == expected
    assert cfg.cluster.timeout == 5 and cfg.to_dict()["cluster"]["timeout"] == 5


def test_dotted_and_nested_overrides(home: Path, cwd: Path) -> None:
    nested = resolve_config({"jobs": {"chunk_size": 7}}, home=home, cwd=cwd, environ={})
    dotted = resolve_config({"jobs.chunk_size": 7}, home=home, cwd=cwd, environ={})
    assert nested == dotted and dotted.jobs.chunk_size == 7


def test_environment_variables(home: Path, cwd: Path) -> None:
    environ = {
        "SUPERDUPERDB_MONGODB__URI": "mongodb://db.example:27018/",
        "SUPERDUPERDB_MONGODB__TIMEOUT_MS": "250",
        "SUPERDUPERDB_TYPES__PICKLE_FALLBACK": "true",
        "SUPERDUPERDB_CLUSTER__ADDRESS": "null",
        "SUPERDUPERDB_MASTER__HOST": "",
        "SUPERDUPERDB_REMOTE": "false",
        "SUPERDUPERDB_TEST_MONGODB_URI": "mongodb://ignored/",  # the test suite's own variable
        "OTHER": "x",
    }
    cfg = resolve_config(home=home, cwd=cwd, environ=environ)
    assert cfg.mongodb.uri == "mongodb://db.example:27018/" and cfg.source("mongodb.uri") == "environment"
    assert cfg.mongodb.timeout_ms == 250 and cfg.types.pickle_fallback is True
    assert cfg.cluster.address is None and cfg.master.host is None and cfg.remote is False


def test_original_config_json_layout(home: Path, cwd: Path, caplog) -> None:
    write_json(cwd, {
        "remote": True,
        "master": {"host": "master.example", "port": 8181},
        "jobs": {"host": "scheduler.example", "port": 8786},
        "mongodb": {"host": "mongo.example", "port": 27018},
        "redis": {"host": "redis.example", "port": 6379},
    })
    with caplog.at_level(logging.WARNING, logger="superduperdb.config"):
        cfg = resolve_config(home=home, cwd=cwd, environ={})
    assert cfg.cluster.address == "tcp://scheduler.example:8786"
    assert cfg.source("cluster.address") == str(cwd / "config.json")
    assert (cfg.mongodb.host, cfg.mongodb.port) == ("mongo.example", 27018)
    assert (cfg.master.host, cfg.master.port) == ("master.example", 8181)
    assert cfg.remote is True and cfg.redis.host == "redis.example"  # accepted ...
    assert any("redis" in record.getMessage() for record in caplog.records)  # ... with a warning
    write_json(cwd, {"remote": False, "jobs": {"host": "scheduler.example", "port": 8786}})
    assert resolve_config(home=home, cwd=cwd, environ={}).cluster.address is None  # not remote: inline


def test_config_json_mongodb_host_is_what_connect_uses(clean_env, cwd: Path) -> None:
    port = _closed_port()
    write_json(cwd, {"mongodb": {"host": "127.0.0.1", "port": port}})
    start = time.monotonic()
    with pytest.raises(ConnectionFailure) as info:
        superduperdb.connect(cluster=None, config={"mongodb.timeout_ms": 200})
    assert info.value.uri == f"mongodb://127.0.0.1:{port}/"
    assert time.monotonic() - start < 3


def test_port_alone_means_localhost(clean_env) -> None:
    port = _closed_port()
    with pytest.raises(ConnectionFailure) as info:  # not the embedded store, as pymongo
        superduperdb.SuperDuperClient(port=port, cluster=None, config={"mongodb.timeout_ms": 100})
    assert info.value.uri == f"mongodb://localhost:{port}/"
    with pytest.raises(ConnectionFailure) as info:
        superduperdb.connect(cluster=None, config={"mongodb.port": port, "mongodb.timeout_ms": 100})
    assert info.value.uri == f"mongodb://localhost:{port}/"


def test_resolved_when_connecting_not_at_import(clean_env, monkeypatch, cwd: Path) -> None:
    assert superduperdb.connect(cluster=None).uri == "mongomock://default"
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", "mongomock://from-env")
    write_cwd(cwd, "jobs: {chunk_size: 11}\n")
    client = superduperdb.connect(cluster=None)
    assert client.uri == "mongomock://from-env"
    assert client.config.jobs.chunk_size == 11
    assert client.config.source("jobs.chunk_size") == str(cwd / "superduperdb.yaml")
    assert superduperdb.connect("mongomock://given", cluster=None).uri == "mongomock://given"  # argument wins


def test_config_is_a_picklable_read_only_snapshot(home: Path, cwd: Path) -> None:
    cfg = resolve_config({"jobs.chunk_size": 3}, home=home, cwd=cwd, environ={})
    copy = pickle.loads(pickle.dumps(cfg))
    assert copy == cfg and copy.source("jobs.chunk_size") == "keyword arguments"
    assert pickle.loads(pickle.dumps(cfg.jobs)).chunk_size == 3
    with pytest.raises(AttributeError):
        cfg.jobs.chunk_size = 4
    with pytest.raises(AttributeError, match="chunk_size"):
        cfg.jobs.chunk_sise  # noqa: B018


# -- unknown keys --------------------------------------------------------------------------------


def _assert_unknown(err: ConfigError, key: str, suggestion: str) -> None:
    assert isinstance(err, SuperDuperError) and isinstance(err, ValueError)
    assert err.key == key
    assert EVERY_KEY <= set(err.valid)
    message = str(err)
    assert key in message and f"Did you mean {suggestion!r}" in message
    assert len(message) < 400  # not every one of the ~40 keys on one line
    section = key.split(".")[0]
    if any(k.startswith(f"{section}.") for k in EVERY_KEY):  # the keys of its section are listed
        assert all(k.split(".", 1)[1] in message for k in EVERY_KEY if k.startswith(f"{section}."))
    else:  # the sections are
        assert all(k.split(".")[0] in message for k in EVERY_KEY)


def test_a_section_given_a_value_says_so(clean_env) -> None:
    with pytest.raises(ConfigError) as info:
        superduperdb.connect("mongomock://x", config={"cluster": "local"})
    message = str(info.value)
    assert "'cluster' in keyword arguments is a section, not a key" in message
    assert "cluster.address: 'local'" in message and "cluster.timeout" not in message


@pytest.mark.parametrize("source", ["home", "cwd", "json", "env", "kwargs"])
def test_unknown_key_from_every_source(home: Path, cwd: Path, source: str) -> None:
    environ: dict[str, str] = {}
    overrides = None
    if source == "home":
        write_home(home, "mongodb: {urii: mongomock://x}\n")
    elif source == "cwd":
        write_cwd(cwd, "mongodb: {urii: mongomock://x}\n")
    elif source == "json":
        write_json(cwd, {"mongodb": {"urii": "mongomock://x"}})
    elif source == "env":
        environ["SUPERDUPERDB_MONGODB__URII"] = "mongomock://x"
    else:
        overrides = {"mongodb": {"urii": "mongomock://x"}}
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides, home=home, cwd=cwd, environ=environ)
    _assert_unknown(info.value, "mongodb.urii", "mongodb.uri")


def test_unknown_section_and_bad_files(home: Path, cwd: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(home=home, cwd=cwd, environ={"SUPERDUPERDB_JOB__CHUNK_SIZE": "3"})
    _assert_unknown(info.value, "job.chunk_size", "jobs.chunk_size")
    with pytest.raises(ConfigError) as info:
        resolve_config({"cluster.adress": None}, home=home, cwd=cwd, environ={})
    _assert_unknown(info.value, "cluster.adress", "cluster.address")
    write_cwd(cwd, "mongodb: [unclosed\n")
    with pytest.raises(ConfigError, match="superduperdb.yaml"):
        resolve_config(home=home, cwd=cwd, environ={})
    write_cwd(cwd, "- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(home=home, cwd=cwd, environ={})
    (cwd / "superduperdb.yaml").unlink()
    (cwd / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        resolve_config(home=home, cwd=cwd, environ={})


def test_unknown_key_on_connect(clean_env) -> None:
    with pytest.raises(ConfigError) as info:
        superduperdb.connect("mongomock://x", cluster=None, config={"mongodb.timeout": 5})
    _assert_unknown(info.value, "mongodb.timeout", "mongodb.timeout_ms")


# -- the command line -----------------------------------------------------------------------------


def _invoke(args: list[str], cwd: Path, home: Path, **env: str):
    env = {"HOME": str(home), **env}
    for name in os.environ:
        if name.startswith("SUPERDUPERDB_") and name not in env:
            env[name] = None  # unset for the command
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.output


def test_config_command_prints_every_value_and_its_source(home: Path, cwd: Path) -> None:
    write_cwd(cwd, "jobs: {chunk_size: 42}\n")
    output = _invoke(["config"], cwd, home, SUPERDUPERDB_MONGODB__URI="mongomock://cli")
    lines = {line.split()[0]: line for line in output.splitlines() if line.strip()}
    assert EVERY_KEY <= set(lines)
    assert '"mongomock://cli"' in lines["mongodb.uri"] and lines["mongodb.uri"].endswith("(environment)")
    assert " 42 " in lines["jobs.chunk_size"] and lines["jobs.chunk_size"].endswith(f"({cwd / 'superduperdb.yaml'})")
    assert lines["cluster.address"].endswith("(packaged defaults)")
    as_json = json.loads(_invoke(["config", "--json"], cwd, home, SUPERDUPERDB_MONGODB__URI="mongomock://cli"))
    assert as_json["mongodb.uri"] == {"value": "mongomock://cli", "source": "environment"}
    assert as_json["jobs.chunk_size"]["value"] == 42


def test_info_command_reports_versions_config_and_reachability(home: Path, cwd: Path) -> None:
    report = json.loads(_invoke(["info", "--json"], cwd, home, SUPERDUPERDB_MONGODB__URI="mongomock://cli-info"))
    assert report["python"] == sys.version.split()[0]
    assert report["packages"]["pymongo"] and report["packages"]["dask"]
    assert report["database"]["uri"] == "mongomock://cli-info" and report["database"]["reachable"] is True
    assert report["database"]["uri from"] == "environment"
    assert report["cluster"]["address"] == "local"
    text = _invoke(["info"], cwd, home, SUPERDUPERDB_MONGODB__URI="mongomock://cli-info")
    assert "pymongo" in text and "mongomock://cli-info" in text and "reachable" in text
    unreachable = f"mongodb://127.0.0.1:{_closed_port()}/"
    start = time.monotonic()
    report = json.loads(_invoke(["info", "--json"], cwd, home, SUPERDUPERDB_MONGODB__URI=unreachable,
                                SUPERDUPERDB_MONGODB__TIMEOUT_MS="200"))
    assert time.monotonic() - start < 5
    assert report["database"]["reachable"] is False and unreachable in report["database"]["error"]


def test_python_dash_m_superduperdb(home: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_")}
    env.update(HOME=str(home), SUPERDUPERDB_JOBS__CHUNK_SIZE="9")
    proc = subprocess.run([sys.executable, "-m", "superduperdb", "config", "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["jobs.chunk_size"] == {"value": 9, "source": "environment"}


# -- import time ----------------------------------------------------------------------------------

HEAVY = ("torch", "pynndescent", "numba", "dask", "distributed", "pymongo", "mongomock", "PIL",
         "sentence_transformers", "sklearn")

IMPORT_PROBE = f"""
import json, sys
import superduperdb
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def test_import_is_lazy() -> None:
    """``import superduperdb`` loads none of the heavy libraries (how fast it is: bench/import_time.py)."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_config_is_not_read_at_import(home: Path, cwd: Path) -> None:
    """A broken config does not break ``import superduperdb``; connecting reports it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_")}
    env.update(HOME=str(home), SUPERDUPERDB_MONGODB__URII="mongomock://x")
    probe = textwrap.dedent("""
        import sys
        import superduperdb
        assert "superduperdb.config" not in sys.modules
        try:
            superduperdb.connect(cluster=None)
        except superduperdb.SuperDuperError as exc:
            print(type(exc).__name__, exc.key)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ConfigError", "mongodb.urii"]
