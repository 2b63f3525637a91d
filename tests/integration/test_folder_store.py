"""The embedded store kept in a folder: ``superduperdb.connect("./my-data")``.

Everything persists (documents, metadata, job records, model artifacts, outputs, indexes
on fields, index snapshots) across a "kernel restart" (a new process opening the folder),
a second process is refused while the folder is open, and a writer killed with SIGKILL in
the middle of its writes loses nothing it acknowledged and leaves a folder that opens.
Each check runs real processes: the writer and the readers are separate Python programs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import superduperdb
from superduperdb.errors import ClusterError, StoreFolderError
from superduperdb.store.embedded.folder import read_records

WAIT = 180
ENV = {**os.environ, "SUPERDUPERDB_MASTER__WARM_UP": "false"}


def run_script(code: str, *args: str, timeout: float = 300) -> dict:
    """Run ``code`` in a new Python process; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


WRITE = """
    import json, sys
    import numpy as np
    import superduperdb
    if __name__ == "__main__":
        client = superduperdb.connect(sys.argv[1], cluster=sys.argv[2] if sys.argv[2] != "inline" else None,
                                      config={"master.warm_up": False})
        docs = client.db.docs
        docs.insert_many([{"i": i, "text": "x" * (i + 1), "v": np.full(3, i, dtype="float32")} for i in range(40)])
        docs.create_model("length", len, key="text").wait()
        docs.create_model("vec", lambda v: v, key="v").wait()
        docs.create_semantic_index("v", models=["vec"], keys=["v"], measure="l2").wait()
        docs.create_index("i")
        docs.update_one({"i": 3}, {"$set": {"text": "changed"}}).jobs.wait()
        docs.delete_one({"i": 4})
        found = [d["i"] for d in docs.find(like={"v": np.full(3, 10, dtype="float32")}, n=3)]
        print(json.dumps({"repr": repr(client), "found": found}))
        client.close()
"""

READ = """
    import json, sys
    import numpy as np
    import superduperdb
    if __name__ == "__main__":
        client = superduperdb.connect(sys.argv[1], cluster=sys.argv[2] if sys.argv[2] != "inline" else None,
                                      config={"master.warm_up": False})
        docs = client.db.docs
        three = docs.find_one({"i": 3})
        found = [d["i"] for d in docs.find(like={"v": np.full(3, 10, dtype="float32")}, n=3)]
        print(json.dumps({
            "count": docs.count_documents({}),
            "outputs": docs.count_documents({"_outputs.text.length": {"$exists": True}}),
            "three": [three["text"], three["_outputs"]["text"]["length"], float(three["v"][0])],
            "gone": docs.find_one({"i": 4}) is None,
            "models": docs.list_models(), "watchers": docs.list_watchers(),
            "indexes": docs.list_semantic_indexes(),
            "field_indexes": sorted(docs.index_information()),
            "jobs": len(docs.list_jobs(status="success")),
            "found": found,
            "new_output": docs.insert_one({"i": 99, "text": "abc", "v": np.zeros(3, dtype="float32")}).jobs.wait()
                and docs.find_one({"i": 99})["_outputs"]["text"]["length"],
        }))
        client.close()
"""


@pytest.mark.parametrize("cluster", ["inline", pytest.param("local", marks=pytest.mark.slow)])
def test_a_folder_store_survives_a_new_process(tmp_path, cluster):
    folder = tmp_path / "my-data"
    wrote = run_script(WRITE, str(folder), cluster)
    assert "kept on disk" in wrote["repr"] and str(folder) in wrote["repr"]
    assert wrote["found"] == [10, 9, 11]
    for _ in range(2):  # a restarted kernel, then another program
        read = run_script(READ, str(folder), cluster)
        assert read["count"] in (39, 40)  # 40 - 1 deleted (+ the insert of the previous reader)
        assert read["outputs"] == read["count"]  # every document has its output
        assert read["three"] == ["changed", 7, 3.0] and read["gone"]
        assert read["models"] == ["length", "vec"] and read["watchers"] == ["length/text", "vec/v"]
        assert read["indexes"] == ["v"] and "i_1" in read["field_indexes"]
        assert read["jobs"] >= 4
        assert read["found"] == [10, 9, 11]  # the semantic index answers from the persisted outputs
        assert read["new_output"] == 3


def test_a_second_process_gets_a_clear_error_while_the_folder_is_open(tmp_path):
    folder = tmp_path / "shared"
    client = superduperdb.connect(str(folder), cluster=None)
    client.db.docs.insert_one({"x": 1})
    code = """
        import json, sys
        import superduperdb
        from superduperdb.errors import StoreLockedError
        try:
            superduperdb.connect(sys.argv[1], cluster=None)
        except StoreLockedError as exc:
            print(json.dumps({"error": str(exc)}))
        else:
            print(json.dumps({"error": None}))
    """
    error = run_script(code, str(folder), "x")["error"]
    assert error is not None and f"pid {os.getpid()}" in error and "MongoDB server" in error
    client.close()  # the last client closes the folder: another process may open it now
    assert run_script(code, str(folder), "x")["error"] is None


def test_clients_in_one_process_share_the_folder_and_the_last_close_releases_it(tmp_path):
    folder = tmp_path / "data"
    first = superduperdb.connect(str(folder), cluster=None)
    second = superduperdb.connect(f"file://{folder}", cluster=None)
    first.db.docs.insert_one({"x": 1})
    assert second.db.docs.count_documents({}) == 1
    first.close()
    second.db.docs.insert_one({"x": 2})  # still open: the second client holds it
    second.close()
    again = superduperdb.connect(str(folder), cluster=None)
    assert sorted(d["x"] for d in again.db.docs.find()) == [1, 2]
    again.close()


KILLED_WRITER = """
    import sys
    import superduperdb
    if __name__ == "__main__":
        client = superduperdb.connect(sys.argv[1], cluster=None)
        docs = client.db.docs
        i = 0
        while True:
            docs.insert_one({"i": i, "payload": "p" * 2000})
            docs.update_one({"i": i}, {"$set": {"done": True}})
            print(i, flush=True)  # acknowledged: both writes returned
            i += 1
"""


def test_a_writer_killed_with_sigkill_loses_nothing_it_acknowledged(tmp_path):
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(folder)],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    acknowledged = -1
    deadline = time.monotonic() + 120
    while acknowledged < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
    proc.send_signal(signal.SIGKILL)  # in the middle of its writes
    proc.wait(30)
    assert acknowledged >= 300, "the writer did not get going"

    client = superduperdb.connect(str(folder), cluster=None)
    docs = client.db.docs
    found = sorted(d["i"] for d in docs.find({}, {"i": 1}))
    assert found[: acknowledged + 1] == list(range(acknowledged + 1))  # every acknowledged insert
    assert len(found) <= acknowledged + 2  # at most the one in flight
    assert docs.count_documents({"done": True, "i": {"$lte": acknowledged}}) == acknowledged + 1
    assert all(len(d["payload"]) == 2000 for d in docs.find())  # no half-written document
    docs.insert_one({"i": -1})  # and it goes on working
    client.close()
    again = superduperdb.connect(str(folder), cluster=None)
    assert again.db.docs.count_documents({"i": -1}) == 1
    again.close()


def test_a_torn_journal_tail_is_dropped_and_reported(tmp_path, caplog):
    folder = tmp_path / "torn"
    client = superduperdb.connect(str(folder), cluster=None)
    client.db.docs.insert_many([{"i": i} for i in range(10)])
    client.close()
    (journal,) = folder.glob("journal-*.log")
    with open(journal, "ab") as f:  # what a crash in the middle of a record leaves
        f.write(b"\x12\x34\x56\x78\x40\x00\x00\x00partial")
    client = superduperdb.connect(str(folder), cluster=None)
    assert sorted(d["i"] for d in client.db.docs.find()) == list(range(10))
    assert any("incomplete or damaged record" in r.getMessage() for r in caplog.records)
    client.db.docs.insert_one({"i": 10})
    client.close()
    count, good, size = read_records(journal, lambda op: None)
    assert good == size  # the tail was cut before the new record was appended


def test_the_journal_is_compacted_into_a_snapshot(tmp_path):
    from superduperdb.store.embedded import EmbeddedClient
    from superduperdb.store.embedded.folder import Folder

    folder = tmp_path / "compact"
    client = superduperdb.connect(str(folder), cluster=None)
    docs = client.db.docs
    docs.insert_many([{"i": i, "text": "t"} for i in range(50)])
    for _ in range(5):
        docs.update_many({}, {"$inc": {"n": 1}})
    docs.raw.create_index("i")
    client.close()
    store = EmbeddedClient(folder=Folder(folder, compact_bytes=1))  # compact at this open, whatever the size
    assert (folder / "snapshot.bson").exists() and [p.name for p in folder.glob("journal-*.log")] == ["journal-1.log"]
    assert store.db.docs.count_documents({"n": 5}) == 50
    assert "i_1" in store.db.docs.index_information()
    store.db.docs.insert_one({"i": 50})
    store.close()
    client = superduperdb.connect(str(folder), cluster=None)  # the snapshot, then the new journal
    assert client.db.docs.count_documents({}) == 51 and client.db.docs.count_documents({"n": 5}) == 50
    client.close()


def test_in_memory_says_what_it_is_and_worker_processes_refuse_embedded_stores(tmp_path, unique_name):
    memory = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    assert "in memory: gone when this process exits" in repr(memory)
    assert memory.storage == "in memory: gone when this process exits"
    memory.close()
    for uri in (f"mongomock://{unique_name}", str(tmp_path / "procs")):
        client = superduperdb.connect(uri, cluster="local", config={"cluster.processes": True})
        with pytest.raises(ClusterError, match="cluster.processes: false"):
            client.db.docs.create_model("length", len, key="text")
        client.close()


def test_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(StoreFolderError, match="is a file, not a folder"):
        superduperdb.connect(f"file://{path}", cluster=None)


def test_folder_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = superduperdb.connect("./rel-data", cluster=None)
    assert client.uri == f"file://{tmp_path / 'rel-data'}"
    client.close()
    assert Path("rel-data/LOCK").exists()


def test_serve_refuses_the_in_memory_store_and_info_says_where_the_data_lives(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from superduperdb.cli import main

    for name in [k for k in os.environ if k.startswith("SUPERDUPERDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    refused = CliRunner().invoke(main, ["serve", "--port", "0", "--uri", "mongomock://served"])
    assert refused.exit_code != 0
    assert "embedded store in memory" in refused.output and "--uri ./my-data" in refused.output
    refused = CliRunner().invoke(main, ["serve", "--port", "0"])  # the default config: in memory too
    assert refused.exit_code != 0 and "mongomock://default" in refused.output
    info = CliRunner().invoke(main, ["info", "--json"])
    assert json.loads(info.output)["database"]["storage"] == "in memory: gone when this process exits"
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", f"file://{tmp_path / 'data'}")
    info = CliRunner().invoke(main, ["info", "--json"])
    assert json.loads(info.output)["database"]["storage"] == f"folder '{tmp_path / 'data'}': kept on disk"
