"""``superduperdb demo``: the end-to-end tour on the embedded default.

Real text (paragraphs of numpy's docstrings) is embedded by the real
all-MiniLM-L6-v2 model through a watcher on a local Dask cluster, indexed by
the master, and searched with and without MongoDB filters.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

BATCH = 32  # paragraphs per model call (and per progress step)
# all-MiniLM-L6-v2 embeds about 20 paragraphs of numpy's docstrings per second per CPU core
# (measured on 2 quiet cores: ~45/s); storing the model (91 MB) and loading it on the workers
# add ~30 s. A busy machine takes longer: the bar shows the rate as it goes.
PER_CORE_PER_SECOND = 20.0
STARTUP_SECONDS = 30.0


def _estimate(n: int, cores: int) -> str:
    """How long embedding ``n`` paragraphs takes, in words ("about 2 minutes")."""
    seconds = STARTUP_SECONDS + n / (PER_CORE_PER_SECOND * max(1, min(cores, 8)))
    if seconds < 90:
        return f"{max(10, round(seconds, -1)):.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


def follow(job: Any, total: int, deadline: float) -> None:
    """A progress bar in paragraphs (with paragraphs per second) that follows ``job``'s record until it ends."""
    from tqdm.auto import tqdm

    from ..store.records import FINAL

    with tqdm(total=total, unit="paragraph", desc="embedding", dynamic_ncols=True) as bar:
        while time.monotonic() < deadline:
            record = job.record()
            done = int(float(record.get("progress") or 0.0) * total)
            if done > bar.n:
                bar.update(done - bar.n)
            if record["status"] in FINAL:
                return
            time.sleep(0.25)  # polling the job's record for the bar (the wait after it has its own timeout)

QUERIES = [
    ("solve a linear system of equations", {}),
    ("random numbers from a normal distribution", {}),
    ("fast fourier transform of a signal", {"module": "numpy.fft"}),
    ("mask invalid entries in an array", {"module": {"$ne": "numpy.ma"}}),
]


@click.command()
@click.option("--n", "n", default=None, type=int, help="How many paragraphs (default: all, about 1,850).")
@click.option("--uri", default="mongomock://demo", show_default=True, help="Database URI.")
@click.option("--cluster", default="local", show_default=True, help="'local', a scheduler address, or 'inline'.")
@click.option("-v", "--verbose", count=True, help="Show Dask's logs (INFO) too.")
@click.pass_context
def demo(ctx: click.Context, n: int | None, uri: str, cluster: str, verbose: int) -> None:
    """Embed numpy's docs with MiniLM on a Dask cluster, then search them."""
    import superduperdb

    from .logs import quiet_dask, verbosity

    quiet_dask(verbosity(ctx, verbose))
    import distributed  # noqa: F401  (configures its loggers on import: quieten them after)

    quiet_dask(verbosity(ctx, verbose))
    from superduperdb.datasets import numpy_docstrings
    from superduperdb.models.text import load_minilm

    t0 = time.perf_counter()
    # ~1,850 vectors are searched exactly (below master.exact_threshold), so the master need
    # not spend a minute of CPU compiling pynndescent while the model embeds.
    client = superduperdb.connect(uri, cluster=None if cluster == "inline" else cluster,
                                  config={"master.warm_up": False})
    docs = client.demo.numpy_docs
    docs.drop()
    records = numpy_docstrings(n)
    docs.insert_many(records)
    click.echo(f"inserted {len(records)} paragraphs of numpy's docstrings into {docs.full_name} ({client.uri})")

    cores = os.cpu_count() or 1
    click.echo(f"registering all-MiniLM-L6-v2 with a watcher on 'text': it embeds every paragraph on the cluster, "
               f"about {_estimate(len(records), cores)} on {cores} idle CPU core(s), longer on a busy machine "
               "(superduperdb demo --n 300 is a shorter run) ...")
    t = time.perf_counter()
    # Chunks of one model batch: the progress below advances batch by batch, in paragraphs per second.
    jobs = docs.create_model("minilm", load_minilm(device="cpu"), key="text", batch_size=BATCH,
                             max_chunk_size=BATCH)
    follow(jobs[0], len(records), deadline=time.monotonic() + 1800)
    jobs.wait(timeout=1800, progress=False)
    click.echo(f"  {len(records)} embeddings in {time.perf_counter() - t:.1f} s")
    docs.create_semantic_index("text", models=["minilm"], keys=["text"], measure="cosine").wait(timeout=600)

    result = docs.insert_one({"text": "Compute the eigenvalues of a square matrix.", "name": "demo.new",
                              "module": "demo", "kind": "summary"})
    result.jobs.wait(timeout=120)
    click.echo("inserted one more paragraph; its embedding and index entry are ready (read-your-writes)\n")

    for query, filter in [*QUERIES, ("eigenvalues of a matrix", {"module": "demo"})]:
        label = f" with filter {filter}" if filter else ""
        click.echo(f"find(like={{'text': {query!r}}}, n=3){label}")
        for doc in docs.find(filter, like={"text": query}, n=3):
            click.echo(f"  {doc['_score']:.3f}  {doc['name']:<32} {doc['text'][:70]}")
        click.echo("")
    click.echo(f"demo finished in {time.perf_counter() - t0:.1f} s")
    client.close()
