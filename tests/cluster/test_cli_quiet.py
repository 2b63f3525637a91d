"""``superduperdb local-cluster`` is quiet by default: its summary is not buried in Dask's INFO logs.

Without ``-v`` the components' Dask loggers run at WARNING; with ``-v`` their INFO lines show.
(``--log-dir`` keeps writing everything to the files: see test_cli_cluster.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import poll

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
START = 120.0


def _run(tmp_path: Path, *flags: str) -> str:
    out = tmp_path / f"out{'-'.join(flags)}.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_")}
    env["SUPERDUPERDB_MASTER__WARM_UP"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([str(BIN / "superduperdb"), *flags, "local-cluster", "-n", "1", "--port", "0",
                                 "--dashboard-address", ":0", "--no-master"],
                                stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        poll(lambda: proc.poll() is not None or "Press Ctrl-C" in out.read_text(), START, "the cluster to start")
        assert proc.poll() is None, out.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return out.read_text()


def test_local_cluster_is_quiet_by_default_and_verbose_with_v(tmp_path):
    quiet = _run(tmp_path)
    assert "scheduler: tcp://" in quiet and "stopped." in quiet
    dask_info = [line for line in quiet.splitlines() if " - distributed." in line and " - INFO - " in line]
    assert not dask_info, dask_info[:5]
    loud = _run(tmp_path, "-v")
    assert any(" - distributed." in line and " - INFO - " in line for line in loud.splitlines()), loud[-2000:]
