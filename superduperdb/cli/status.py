"""What ``superduperdb info`` reports about the database and the cluster."""

from __future__ import annotations

from typing import Any


def gather_info() -> dict[str, Any]:
    from ..backends import open_client, uri_from_config
    from ..config import resolve_config
    from ..errors import SuperDuperError

    cfg = resolve_config()
    uri = uri_from_config(cfg)
    database: dict[str, Any] = {"uri": uri, "uri from": cfg.source("mongodb.uri")}
    try:
        client = open_client(uri, cfg)
        database["reachable"] = True
        database["databases"] = ", ".join(client.list_database_names()) or "(none)"
    except SuperDuperError as exc:
        database["reachable"] = False
        database["error"] = str(exc)
    cluster: dict[str, Any] = {"address": cfg.cluster.address, "address from": cfg.source("cluster.address")}
    address = cfg.cluster.address
    if address and address != "local":
        cluster.update(_scheduler_info(address, float(cfg.cluster.timeout)))
    return {"database": database, "cluster": cluster}


def _scheduler_info(address: str, timeout: float) -> dict[str, Any]:
    try:
        import distributed

        with distributed.Client(address, timeout=timeout) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            return {
                "reachable": True,
                "workers": len(workers),
                "worker addresses": ", ".join(sorted(workers)),
                "master workers": ", ".join(a for a, w in workers.items() if w.get("resources", {}).get("MASTER")) or "(none)",
            }
    except Exception as exc:  # report, don't crash: this is a diagnostic command
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}
