"""The "superduperdb" page of the Dask dashboard (``/superduperdb``), made with Bokeh as Dask's pages are.

Added by :func:`add_page` when the scheduler runs the preload and serves its
dashboard (bokeh installed: ``pip install 'superduperdb[dashboard]'``); a
link to it joins the navigation bar of every Dask page. It shows, refreshed
every second from what the scheduler knows (:func:`superduperdb.tasks.report.cluster_report`):

* the master (worker, generation, age of its report) and the job queue;
* jobs by collection and kind: pending, running, success, failed, cancelled;
* the latest errors (failed jobs, newest first);
* the lag of each watcher over the last ten minutes (documents; sampled every second by the
  scheduler, so the page shows them as soon as it opens), and now (documents, seconds);
* the indexes: vectors, graph, tail, shards, snapshot age, catch-up;
* query latency over time (mean per refresh), and per index.

Nothing here reads MongoDB: the master's report arrives with its worker's
heartbeats, so an open page costs the cluster nothing but this drawing.
"""

from __future__ import annotations

import datetime
import functools
import html
import logging
import time
from collections.abc import Callable
from typing import Any

from ..store.records import CANCELLED, FAILED, PENDING, RUNNING, SUCCESS
from ..tasks.report import index_totals

logger = logging.getLogger(__name__)

STATUSES = (PENDING, RUNNING, SUCCESS, FAILED, CANCELLED)
PATH = "/superduperdb"
NAME = "superduperdb"
REFRESH_MS = 1000


def add_page(scheduler: Any, report: Callable[[Any], dict], history: Any) -> bool:
    """Serve the page on the scheduler's dashboard and link it from Dask's navigation bar.

    ``report(scheduler)`` is what the page shows (:func:`superduperdb.tasks.report.cluster_report`), ``history``
    the lines it draws (:class:`.observe.History`).

    Returns False (and adds nothing) when the scheduler serves no dashboard
    (bokeh missing, or ``--no-dashboard``). Call it on the scheduler's event
    loop (a preload's ``dask_setup`` is).
    """
    applications = getattr(getattr(scheduler, "http_application", None), "applications", None)
    if not applications:
        return False
    if any(getattr(app, "_superduperdb", False) for app in applications):
        return True
    try:
        from distributed.dashboard.core import BokehApplication
        from distributed.dashboard.scheduler import template_variables
        from tornado.ioloop import IOLoop
    except ImportError:  # a bokeh that this Dask does not support: Dask runs without a dashboard too
        return False
    variables = template_variables(scheduler)  # memoized: the dict Dask's own pages draw their navigation from
    if NAME not in variables["pages"]:
        variables["pages"].append(NAME)
    prefix = getattr(applications[0], "prefix", "") or ""
    app = BokehApplication({PATH: functools.partial(page, report, history)}, scheduler, prefix=prefix, template_variables=variables)
    app._superduperdb = True
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    logger.info("superduperdb page on the dashboard at %s%s", prefix.rstrip("/"), PATH)
    return True


def page(report: Callable[[Any], dict], history: Any, scheduler: Any, extra: dict, doc: Any) -> None:
    """The Bokeh document of one browser session."""
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    view = Page(scheduler, report, history)
    view.update()
    doc.title = "Dask: superduperdb"
    doc.add_root(view.root)
    doc.add_periodic_callback(view.update, REFRESH_MS)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


TABLE_STYLE = ("<style>table.sddb{border-collapse:collapse;font-size:12px;margin:4px 0 10px 0}"
               "table.sddb th,table.sddb td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}"
               "table.sddb th{font-weight:600;border-bottom:1px solid #999}"
               "table.sddb td.text,table.sddb th.text{text-align:left}"
               "table.sddb caption{text-align:left;font-weight:600;padding:2px 0}</style>")


class _Table:
    """A table drawn as HTML in a Bokeh ``Div`` (its text is in the page, and it redraws when its rows change:
    a Bokeh ``DataTable`` does not redraw when only the values of its rows change)."""

    def __init__(self, title: str, columns: list[tuple[str, str]], name: str, text: tuple[str, ...] = ()) -> None:
        from bokeh.models import Div

        self.title, self.columns, self.text = title, columns, set(text)
        self.div = Div(text="", sizing_mode="stretch_width", name=name)
        self.show({field: [] for field, _ in columns})

    def show(self, data: dict[str, list]) -> None:
        def cell(tag: str, field: str, value: Any) -> str:
            kind = ' class="text"' if field in self.text else ""
            return f"<{tag}{kind}>{html.escape('' if value is None else str(value))}</{tag}>"

        head = "".join(cell("th", f, title) for f, title in self.columns)
        count = len(data[self.columns[0][0]])
        rows = "".join("<tr>" + "".join(cell("td", f, data[f][k]) for f, _ in self.columns) + "</tr>"
                       for k in range(count))
        empty = "" if count else f'<tr><td class="text" colspan="{len(self.columns)}">(none)</td></tr>'
        text = (f'{TABLE_STYLE}<table class="sddb"><caption>{html.escape(self.title)}</caption>'
                f"<thead><tr>{head}</tr></thead><tbody>{rows}{empty}</tbody></table>")
        if text != self.div.text:
            self.div.text = text


def _lines(title: str, y_label: str, name: str) -> tuple[Any, Any]:
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    source = ColumnDataSource({"xs": [], "ys": [], "name": [], "color": []})
    fig = figure(title=title, x_axis_type="datetime", height=260, sizing_mode="stretch_width", name=name,
                 tools="pan,wheel_zoom,box_zoom,reset")
    fig.multi_line(xs="xs", ys="ys", line_color="color", legend_field="name", line_width=2, source=source)
    fig.yaxis.axis_label = y_label
    fig.legend.location = "top_left"
    return source, fig


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Page:
    """The page's widgets, and :meth:`update`, which refills them from the scheduler's report."""

    def __init__(self, scheduler: Any, report: Callable[[Any], dict], history: Any) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import Div
        from bokeh.palettes import Category10_10

        self.scheduler, self.report, self.history = scheduler, report, history
        self.palette = Category10_10
        self.header = Div(text="", sizing_mode="stretch_width", name="superduperdb-header")
        self.jobs = _Table("Jobs", [("collection", "collection"), ("kind", "kind"), *[(s, s) for s in STATUSES],
                                    ("queued", "tasks on the scheduler")], "superduperdb-jobs", ("collection", "kind"))
        self.errors = _Table("Latest errors", [("when", "failed at"), ("collection", "collection"), ("kind", "kind"),
                                               ("on", "on"), ("job_id", "job"), ("error", "error")],
                             "superduperdb-errors", ("when", "collection", "kind", "on", "job_id", "error"))
        self.lag_lines, lag_figure = _lines("Lag per watcher", "documents not yet computed", "superduperdb-lag")
        self.watchers = _Table("Watchers", [("collection", "collection"), ("watcher", "watcher"),
                                            ("lag_documents", "lag (documents)"), ("lag_seconds", "lag (s)"),
                                            ("pending", "pending jobs"), ("running", "running jobs")],
                               "superduperdb-watchers", ("collection", "watcher"))
        self.indexes = _Table("Indexes", [("collection", "collection"), ("index", "index"), ("vectors", "vectors"),
                                          ("graph", "graph"), ("tail", "tail"), ("shards", "shards"),
                                          ("snapshot_age", "snapshot age"), ("catch_up", "catch-up"),
                                          ("queries", "queries"), ("latency_ms", "mean latency (ms)")],
                              "superduperdb-indexes", ("collection", "index"))
        self.latency_lines, latency_figure = _lines("Query latency per index (mean over each second)", "ms",
                                                    "superduperdb-latency")
        self.root = column(self.header, row(self.jobs.div, self.errors.div, sizing_mode="stretch_width"),
                           lag_figure, row(self.watchers.div, self.indexes.div, sizing_mode="stretch_width"),
                           latency_figure, sizing_mode="stretch_width")

    # -- refreshing ---------------------------------------------------------------------------------
    def update(self) -> None:
        try:
            self._update(self.report(self.scheduler))
        except Exception:  # noqa: BLE001 - keep the page alive; the next tick tries again
            logger.exception("could not refresh the superduperdb page")

    def _update(self, report: dict) -> None:
        master = report.get("master") or {}
        now, queue = report["at"], report["queue"]
        self.header.text = self._header(master, queue, report["workers"], now)
        collections = master.get("collections") or []
        jobs: dict[str, list] = {k: [] for k in ("collection", "kind", *STATUSES, "queued")}
        errors: dict[str, list] = {k: [] for k in ("when", "collection", "kind", "on", "job_id", "error")}
        watchers: dict[str, list] = {k: [] for k in ("collection", "watcher", "lag_documents", "lag_seconds",
                                                     "pending", "running")}
        for c in collections:
            name = f"{c['database']}.{c['collection']}"
            for kind, by_status in sorted((c.get("jobs") or {}).items()):
                jobs["collection"].append(name)
                jobs["kind"].append(kind)
                for status in STATUSES:
                    jobs[status].append(by_status.get(status, 0))
                jobs["queued"].append(queue.get(kind, 0))
            for e in c.get("errors") or []:
                errors["when"].append(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])) if e.get("at")
                                      else "")
                errors["collection"].append(name)
                for key in ("kind", "on", "job_id", "error"):
                    errors[key].append(str(e.get(key) or ""))
            for w in c.get("watchers") or []:
                watchers["collection"].append(name)
                watchers["watcher"].append(w["watcher"])
                watchers["lag_documents"].append(int(round(w["lag_documents"])))
                watchers["lag_seconds"].append(round(w["lag_seconds"], 1))
                watchers["pending"].append(w.get("pending", 0))
                watchers["running"].append(w.get("running", 0))
        from distributed.dashboard.utils import update  # as Dask's pages do: in place, unless unchanged

        self.jobs.show(jobs)
        self.errors.show(errors)
        self.watchers.show(watchers)
        self.indexes.show(self._index_rows(master.get("indexes") or [], now))
        update(self.lag_lines, self._line_data(self.history.lag))
        update(self.latency_lines, self._line_data(self.history.latency))

    def _header(self, master: dict, queue: dict, workers: int, now: float) -> str:
        waiting = sum(queue.values())
        if not master:
            state = ("no master reports yet (it starts when a client first writes to a collection with "
                     "watchers, or uses a semantic index)")
        else:
            state = (f"master generation {master.get('generation')} on {master.get('worker')}, up "
                     f"{_ago(now - master['started_at']) if master.get('started_at') else '?'}, report "
                     f"{max(now - master.get('at', now), 0):.1f} s old")
        return (f"<h3 style='margin:4px 0'>superduperdb</h3><p style='margin:2px 0'>{state}; {workers} workers; "
                f"{waiting} job tasks not finished on the scheduler</p>")

    def _index_rows(self, indexes: list[dict], now: float) -> dict:
        rows: dict[str, list] = {k: [] for k in ("collection", "index", "vectors", "graph", "tail", "shards",
                                                 "snapshot_age", "catch_up", "queries", "latency_ms")}
        for i in index_totals(indexes):  # one row per index: its shards' parts added up
            name = f"{i['database']}.{i['collection']}"
            count = sum(int(v[0]) for v in i["queries"].values())
            seconds = sum(float(v[1]) for v in i["queries"].values())
            rows["collection"].append(name)
            rows["index"].append(i["index"])
            for field in ("vectors", "graph", "tail"):
                rows[field].append(i.get(field))
            rows["shards"].append(f"{i['reporting']}/{i['shards']}")  # reporting / master.shards
            rows["snapshot_age"].append(_ago(i.get("snapshot_age_s")) or "none yet")
            rows["catch_up"].append("" if i.get("catch_up_rows") is None
                                    else f"{i['catch_up_rows']} rows in {i.get('catch_up_s') or 0:.2f} s")
            rows["queries"].append(count)
            rows["latency_ms"].append(round(1000 * seconds / count, 3) if count else None)
        return rows

    def _line_data(self, series: dict) -> dict:
        names = sorted(series)
        return {"xs": [list(series[n][0]) for n in names], "ys": [list(series[n][1]) for n in names],
                "name": names, "color": [self.palette[k % len(self.palette)] for k in range(len(names))]}
