"""What ``superduperdb info`` and ``superduperdb status`` report.

``info``: the database, the cluster, the master, the jobs. ``status``: the
work of the cluster, as its dashboard page shows it (``docs/operations.md``):
jobs by kind and status, each watcher's lag and counts, the indexes, the
latest errors.

Everything here is read-only: neither command creates the master, submits a
job or writes to MongoDB.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

SYSTEM_DATABASES = ("admin", "config", "local")
MAX_JOB_COLLECTIONS = 50
INFO_TIMEOUT = 10.0


def gather_info() -> dict[str, Any]:
    from ..config import redact, resolve_config
    from ..errors import SuperDuperError
    from ..store.backends import open_client, storage_of, uri_from_config

    cfg = resolve_config()
    uri = uri_from_config(cfg)
    database: dict[str, Any] = {"uri": redact(uri), "uri from": cfg.source("mongodb.uri")}
    try:
        database["storage"] = storage_of(uri)
    except SuperDuperError:
        pass
    jobs: dict[str, Any] = {}
    try:
        client = open_client(uri, cfg)
        names = client.list_database_names()
        database["reachable"] = True
        database["databases"] = ", ".join(names) or "(none)"
        jobs = job_counts(client, names)
    except SuperDuperError as exc:
        database["reachable"] = False
        database["error"] = redact(str(exc))
    except Exception as exc:  # pymongo's errors: report, don't crash (a diagnostic command)
        database.setdefault("reachable", False)
        database["error"] = redact(f"{type(exc).__name__}: {exc}")
    cluster: dict[str, Any] = {"address": redact(cfg.cluster.address), "address from": cfg.source("cluster.address")}
    report: dict[str, Any] = {"database": database, "cluster": cluster, "security": security_info(cfg)}
    address = cfg.cluster.address
    if address is None:
        cluster["mode"] = "inline (jobs run in the client's process)"
    elif address == "local":
        cluster["mode"] = "local (each client starts its own Dask cluster)"
    else:
        reachable, master = _scheduler_info(address, min(cfg.cluster.timeout, INFO_TIMEOUT), cfg.master.resource, cfg)
        cluster.update(reachable)
        if master is not None:
            report["master"] = master
    report["jobs"] = jobs
    return report


# -- the cluster ---------------------------------------------------------------------------
def _worker_line(info: dict, report: Any) -> dict[str, Any]:
    metrics = info.get("metrics") or {}
    entry: dict[str, Any] = {
        "name": info.get("name"),
        "threads": info.get("nthreads"),
        "memory limit": _bytes(info.get("memory_limit")),
        "resources": info.get("resources") or {},
        "executing": metrics.get("executing", 0),
        "status": info.get("status"),
    }
    if isinstance(report, dict):
        entry["superduperdb"] = report.get("superduperdb")
        entry["preload"] = report.get("preload")
    elif report is not None:
        entry["preload"] = f"unknown ({type(report).__name__})"
    return entry


def _scheduler_info(address: str, timeout: float, resource: str, cfg: Any) -> tuple[dict[str, Any], dict | None]:
    try:
        import distributed

        from ..cluster.security import dask_security, with_scheme
        from ..store.dispatch import run
        from ..tasks.report import process_report

        with distributed.Client(with_scheme(address, cfg), timeout=timeout, set_as_default=False,
                                security=dask_security(cfg)) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            try:
                reports = run(client, process_report, on_error="return")
            except Exception:  # an old worker without superduperdb: still list the workers
                reports = {}
            cluster = {
                "reachable": True,
                "workers": len(workers),
                "threads": sum(w.get("nthreads", 0) for w in workers.values()),
                "master workers": ", ".join(sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(resource)))
                or f"(none with resource {resource}: the master runs on the first worker)",
                "worker list": {a: _worker_line(w, reports.get(a)) for a, w in sorted(workers.items())},
            }
            return cluster, master_info(client, timeout)
    except Exception as exc:  # report, don't crash: this is a diagnostic command
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}, None


def master_info(client: Any, timeout: float) -> dict[str, Any]:
    """The master's worker, uptime and indexes, without creating it if it does not exist."""
    from ..master.handle import MasterHandle

    master = MasterHandle(client, timeout=timeout).describe()
    if "started_at" not in master:
        return master
    started = float(master.pop("started_at"))
    order = ("worker", "state", "generation")
    return {**{k: master[k] for k in order}, "up": _duration(time.time() - started),
            **{k: v for k, v in master.items() if k not in order}}


# -- security ------------------------------------------------------------------------------
def security_info(cfg: Any) -> dict[str, Any]:
    """What the config protects (docs/security.md): signed artifacts, TLS on the cluster, to MongoDB, HTTPS."""
    from ..cluster.security import KEYS
    from ..store.backends import uri_from_config, uses_tls

    out: dict[str, Any] = {}
    if cfg.security.artifact_key:
        out["artifacts"] = "signed (security.artifact_key is set): unsigned or altered artifacts are refused"
    else:
        out["artifacts"] = ("UNSIGNED: anyone who can write to the database can make the workers run code; "
                            "set security.artifact_key (docs/security.md)")
    ca, cert, key = (cfg.security.tls_ca_file, cfg.security.tls_cert_file, cfg.security.tls_key_file)
    if not any((ca, cert, key)):
        out["cluster tls"] = "off (Dask talks plain TCP; set security.tls_ca_file, tls_cert_file, tls_key_file)"
    elif all((ca, cert, key)):
        out["cluster tls"] = f"on (CA {ca})"
    else:
        out["cluster tls"] = f"misconfigured: set all of {', '.join(KEYS)}"
    uri = uri_from_config(cfg)
    if uri.startswith("mongomock://"):
        out["mongodb tls"] = "not applicable (embedded store)"
    else:
        out["mongodb tls"] = "on" if uses_tls(uri, cfg) else "off (add tls=true to the URI, or set mongodb.tls)"
    out["model server https"] = ("on" if cfg.serve.ssl_certfile and cfg.serve.ssl_keyfile else
                                 "off (set serve.ssl_certfile and serve.ssl_keyfile)")
    return out


# -- jobs ----------------------------------------------------------------------------------
def job_counts(client: Any, databases: list[str]) -> dict[str, dict[str, int]]:
    """``{"db.collection": {status: count}}`` from every ``<collection>._jobs`` (first 50)."""
    counts: dict[str, dict[str, int]] = {}
    for name in databases:
        if name in SYSTEM_DATABASES:
            continue
        db = client[name]
        for table in sorted(db.list_collection_names()):
            if not table.endswith("._jobs"):
                continue
            if len(counts) >= MAX_JOB_COLLECTIONS:
                counts["..."] = {"not counted": 1}
                return counts
            rows = db[table].aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
            counts[f"{name}.{table[: -len('._jobs')]}"] = {str(r["_id"]): int(r["n"]) for r in rows}
    return counts


# -- text ---------------------------------------------------------------------------------------
def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)) or not n:
        return "none"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _index_line(s: dict) -> str:
    build = "none yet" if not s.get("builds") else f"{s.get('last_build_seconds') or 0:.2f} s ({s['builds']} builds)"
    parts = [f"size {s.get('size')}", f"dim {s.get('dim')}", f"tail {s.get('tail')} (exact search)",
             f"graph {s.get('graph_size')}", f"deleted {s.get('deleted')}", f"last build {build}"]
    if s.get("building"):
        parts.append("building now")
    if s.get("last_error"):
        parts.append(f"last error {s['last_error']}")
    return ", ".join(parts)


def _sweep_line(entry: dict) -> str:
    """One watched collection's sweep: its interval, and its last pass with its lag (time since)."""
    every = f"every {entry.get('interval'):g} s" if entry.get("interval") else "sweep off"
    if entry.get("change_stream") == "following":
        every = f"change stream and {every}"
    if "at" not in entry:
        return f"{every}, no pass yet"
    done = f"last pass {_duration(entry.get('ago', 0))} ago, took {entry.get('seconds', 0):.2f} s"
    if entry.get("error"):
        return f"{every}, {done}, failed: {entry['error']}"
    repaired = {k: v for k, v in (entry.get("report") or {}).items() if v and k != "documents_checked"}
    what = ", ".join(f"{k} {v}" for k, v in repaired.items()) or "nothing to repair"
    return f"{every}, {done}: {what}"


def format_sections(report: dict[str, Any]) -> list[str]:
    """The ``database``, ``cluster``, ``master`` and ``jobs`` sections as text lines."""
    lines: list[str] = []
    for section in ("database", "cluster", "security"):
        lines.append(f"{section}:")
        for key, value in report.get(section, {}).items():
            if key == "worker list":
                for address, w in value.items():
                    res = ", ".join(f"{k}={v:g}" for k, v in (w.get("resources") or {}).items())
                    lines.append(f"  worker {address}  name={w.get('name')} threads={w.get('threads')} "
                                 f"memory={w.get('memory limit')} executing={w.get('executing')}"
                                 + (f" resources: {res}" if res else "")
                                 + ("" if w.get("preload") in (True, None) else "  (no superduperdb preload)"))
            else:
                lines.append(f"  {key:22} {value}")
    master = report.get("master")
    if master is not None:
        lines.append("master:")
        for key in ("state", "generation", "worker", "up"):
            if key in master:
                lines.append(f"  {key:22} {master[key]}")
        for s in master.get("indexes", []):
            lines.append(f"  index {s.get('index')!r} of {s.get('collection')}: {_index_line(s)}")
        if master.get("state") == "running" and not master.get("indexes"):
            lines.append("  (no index loaded yet)")
        for collection, entry in (master.get("reconciler") or {}).items():
            lines.append(f"  reconciler {collection}: {_sweep_line(entry)}")
    jobs = report.get("jobs")
    if jobs is not None:
        lines.append("jobs:")
        if not jobs:
            lines.append("  (no job records)")
        for collection, by_status in jobs.items():
            lines.append(f"  {collection:22} " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    return lines


# -- superduperdb status ---------------------------------------------------------------------------
def gather_status(database: str | None = None, counts: bool = True) -> dict[str, Any]:
    """What ``superduperdb status`` shows: the cluster's report (its scheduler's view of the master),
    or, without a standing cluster, the job records read from the database; with ``counts``, each
    watcher's documents and outputs counted in the database. ``database``: ``db`` or ``db.collection``."""
    from ..config import redact, resolve_config
    from ..store.backends import open_client, uri_from_config

    cfg = resolve_config()
    uri = uri_from_config(cfg)
    address = cfg.cluster.address
    status: dict[str, Any] = {"at": time.time(), "database": {"uri": redact(uri)},
                              "cluster": {"address": redact(address)}}
    report = None
    if isinstance(address, str) and address != "local":
        report = _cluster_report(address, min(cfg.cluster.timeout, INFO_TIMEOUT), status["cluster"], cfg)
    master = (report or {}).get("master") or {}
    status["queue"] = (report or {}).get("queue") or {}
    status["master"] = {k: master.get(k) for k in ("worker", "generation", "started_at", "at", "shards")} if master else None
    collections = master.get("collections")
    try:
        client = open_client(uri, cfg)
        if collections is None:  # no master reports: the job records say what there is
            collections = _collections_from_records(client, database)
        collections = [c for c in collections if _selected(c, database)]
        if counts:
            for c in collections:
                _add_counts(client[c["database"]], c)
        status["database"]["reachable"] = True
    except Exception as exc:  # pymongo's errors, a bad URI: report, don't crash (a diagnostic command)
        status["database"].update(reachable=False, error=redact(f"{type(exc).__name__}: {exc}"))
        collections = [c for c in collections or [] if _selected(c, database)]
    status["collections"] = collections
    status["indexes"] = [i for i in master.get("indexes") or [] if _selected(i, database)]  # one per index per shard
    return status


def _selected(entry: dict, database: str | None) -> bool:
    if not database:
        return True
    name = f"{entry.get('database')}.{entry.get('collection')}"
    return database in (entry.get("database"), name)


def _cluster_report(address: str, timeout: float, cluster: dict, cfg: Any) -> dict | None:
    try:
        import distributed

        from ..cluster.security import dask_security, with_scheme
        from ..store.dispatch import run_on_scheduler
        from ..tasks.report import cluster_report

        with distributed.Client(with_scheme(address, cfg), timeout=timeout, set_as_default=False,
                                security=dask_security(cfg)) as client:
            report = run_on_scheduler(client, cluster_report)
        cluster.update(reachable=True, workers=report["workers"])
        return report
    except Exception as exc:  # report, don't crash: this is a diagnostic command
        cluster.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
        return None


def _collections_from_records(client: Any, database: str | None) -> list[dict]:
    from ..store.monitor import collection_report

    out: list[dict] = []
    for name in client.list_database_names():
        if name in SYSTEM_DATABASES or (database and database.split(".")[0] != name):
            continue
        for table in sorted(client[name].list_collection_names()):
            if table.endswith("._jobs") and len(out) < MAX_JOB_COLLECTIONS:
                out.append(collection_report(client[name], table[: -len("._jobs")]))
    return out


def _add_counts(db: Any, entry: dict) -> None:
    from ..store.metadata import MetadataStore
    from ..store.monitor import watcher_counts

    rows = {r["name"]: r for r in MetadataStore(db, entry["collection"]).list("watchers")}
    for w in entry.get("watchers") or []:
        if w["watcher"] in rows:
            w.update(watcher_counts(db[entry["collection"]], rows[w["watcher"]]))


def _table(header: list[str], rows: list[list[Any]], indent: str = "    ") -> list[str]:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    return [indent + "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
            for r in cells]


def _shards_line(shards: dict | None) -> str:
    """``, shards 2 of 3 reporting`` for a sharded master (nothing for one shard)."""
    if not shards or (shards.get("total") or 1) <= 1:
        return ""
    reporting = shards.get("reporting") or []
    return f", shards {len(reporting)} of {shards['total']} reporting"


def format_status(status: dict[str, Any]) -> list[str]:
    """``superduperdb status`` as text lines."""
    from ..config import redact
    from ..tasks.report import index_totals

    STATUSES = ("pending", "running", "success", "failed", "cancelled")
    now = status["at"]
    cluster, db = status["cluster"], status["database"]
    where = cluster.get("address") or "inline"
    if cluster.get("reachable") is False:
        where += f" (unreachable: {cluster.get('error')})"
    elif cluster.get("workers") is not None:
        where += f" ({cluster['workers']} workers)"
    lines = [f"superduperdb status at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}",
             f"cluster   {where}", f"database  {db['uri']}" + ("" if db.get("reachable", True)
                                                                 else f" (unreachable: {db.get('error')})")]
    master = status.get("master")
    if master:
        lines.append(f"master    generation {master.get('generation')} on {master.get('worker')}, up "
                     f"{_duration(now - (master.get('started_at') or now))}, report "
                     f"{max(now - (master.get('at') or now), 0):.1f} s old"
                     + _shards_line(master.get("shards")))
    elif isinstance(cluster.get("address"), str) and cluster.get("address") != "local" and cluster.get("reachable"):
        lines.append("master    none reports yet (started when a client first writes to a collection with "
                     "watchers or uses a semantic index)")
    queue = status.get("queue") or {}
    if queue:
        lines.append("queue     job tasks not finished on the scheduler: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(queue.items())))
    if not status["collections"] and not status["indexes"]:
        lines.append("(no collection with jobs)")
    indexes: dict[str, list[dict]] = {}
    for i in index_totals(status["indexes"]):  # the shards' parts of each index, added up
        indexes.setdefault(f"{i['database']}.{i['collection']}", []).append(i)
    names = [f"{c['database']}.{c['collection']}" for c in status["collections"]]
    by_name = dict(zip(names, status["collections"]))
    for name in names + sorted(set(indexes) - set(names)):
        c = by_name.get(name, {})
        lines.append("")
        lines.append(name)
        if c.get("error"):
            lines.append(f"  error: {redact(c['error'])}")
        if c.get("jobs"):
            lines.append("  jobs")
            lines += _table(["kind", *STATUSES], [[k, *(v.get(s, 0) for s in STATUSES)]
                                                 for k, v in sorted(c["jobs"].items())])
        if c.get("watchers"):
            lines.append("  watchers")
            lines += _table(["watcher", "documents", "outputs", "lag (documents)", "lag (s)", "pending", "running"],
                            [[w["watcher"], w.get("documents"), w.get("outputs"), int(round(w["lag_documents"])),
                              f"{w['lag_seconds']:.1f}", w.get("pending", 0), w.get("running", 0)]
                             for w in c["watchers"]])
        if indexes.get(name):
            lines.append("  indexes")
            rows = []
            for i in indexes[name]:
                count = sum(int(v[0]) for v in i["queries"].values())
                seconds = sum(float(v[1]) for v in i["queries"].values())
                rows.append([i["index"], i["vectors"], i["graph"], i["tail"], f"{i['reporting']}/{i['shards']}",
                             _duration(i["snapshot_age_s"]) if i.get("snapshot_age_s") is not None else "none yet",
                             "" if i.get("catch_up_rows") is None
                             else f"{i['catch_up_rows']} rows, {i.get('catch_up_s') or 0:.2f} s",
                             count, f"{1000 * seconds / count:.2f}" if count else ""])
            lines += _table(["index", "vectors", "graph", "tail", "shards", "snapshot age", "catch-up", "queries",
                             "mean ms"], rows)
        if c.get("reconciler"):
            lines.append(f"  reconciler  {_sweep_line(c['reconciler'])}")
        if c.get("errors"):
            lines.append("  latest errors")
            for e in c["errors"]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])) if e.get("at") else "?"
                lines.append(f"    {when}  {e.get('kind')} {e.get('on') or ''} job {e['job_id']}: "
                             f"{redact(e.get('error') or '')}")
    return lines
