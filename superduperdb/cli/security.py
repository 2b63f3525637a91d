"""``superduperdb sign-artifacts``: review the artifacts of a database, then sign them.

With ``security.artifact_key`` set, clients and workers load only artifacts
signed with that key (docs/security.md). A database written before the key
was set (or with another key) is signed here, after someone has reviewed what
it holds: the command lists every artifact (its collection, identity,
serializer, size, digest, the class its row names and its state), can write
the bytes of those it would sign to a folder for inspection (``--export``,
nothing is unpickled), and signs only when confirmed (``--yes`` or the prompt).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _table(entries) -> list[str]:
    lines = [f"{'STATE':9} {'COLLECTION':16} {'IDENTITY':34} {'WHERE':20} {'SERIALIZER':10} {'SIZE':>9}  SHA256        "
             "DETAIL"]
    for e in entries:
        lines.append(f"{e.state:9} {e.collection:16} {e.identity:34} {e.field:20} {e.serializer or '-':10} "
                     f"{e.size if e.size is not None else '-':>9}  {(e.digest or '-')[:12]:13} {e.detail}")
    return lines


@click.command("sign-artifacts")
@click.argument("database")
@click.option("--collection", "collections", multiple=True,
              help="Only this collection's artifacts (repeat for several; default: every collection that has any).")
@click.option("--uri", default=None, help="MongoDB URI (default: mongodb.uri of the config).")
@click.option("--dry-run", is_flag=True, help="List the artifacts and their state; sign nothing. "
                                              "Exits 1 if any is not signed.")
@click.option("--export", "export", type=click.Path(file_okay=False), default=None,
              help="Write the bytes of each artifact that would be signed to DIR/<sha256>.<serializer>, "
                   "for inspection (e.g. python -m pickletools); nothing is loaded.")
@click.option("--replace-invalid", is_flag=True,
              help="Also sign artifacts whose signature is wrong (after changing the key, or after review).")
@click.option("--yes", "-y", is_flag=True, help="Sign without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def sign_artifacts(database, collections, uri, dry_run, export, replace_invalid, yes, as_json):
    """Review and sign the artifacts of DATABASE with security.artifact_key.

    Lists every artifact (models and their versions, types, measures, parts, metrics,
    losses, splitters, trainers, index snapshots) with its state: signed, unsigned,
    invalid (a signature this key does not confirm), changed (bytes that no longer match
    their digest: never signed) or missing. Then signs the unsigned ones (and the invalid
    ones with --replace-invalid) once confirmed. Signing says "I reviewed this code and
    allow the workers to run it": review first (--dry-run, --export).
    """
    from ..config import redact, resolve_config
    from ..store import inventory as inv
    from ..store.backends import open_client, uri_from_config

    cfg = resolve_config()
    key = cfg.security.artifact_key
    if not key:
        raise click.ClickException("No artifact key is set: set security.artifact_key (e.g. "
                                   "SUPERDUPERDB_SECURITY__ARTIFACT_KEY) to the key the clients and workers use.")
    uri = uri or uri_from_config(cfg)
    client = open_client(uri, cfg)
    try:
        db = client[database]
        known = inv.artifact_collections(db)
        unknown = [c for c in collections if c not in known]
        if unknown:
            raise click.ClickException(f"{database!r} has no artifacts in {', '.join(map(repr, unknown))}; "
                                       f"collections with artifacts: {', '.join(known) or 'none'}.")
        entries = inv.inventory(db, key, collections or None)
        todo = [e for e in entries if e.state in (inv.SIGNABLE if replace_invalid else (inv.UNSIGNED,))]
        if as_json:
            click.echo(json.dumps([e.as_dict() for e in entries], indent=2, default=str))
        else:
            click.echo(f"artifacts of {database!r} at {redact(uri)}:")
            for line in _table(entries):
                click.echo(f"  {line}")
        counts = {s: sum(e.state == s for e in entries) for s in (inv.SIGNED, inv.UNSIGNED, inv.INVALID, inv.CHANGED,
                                                                   inv.MISSING)}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no artifacts"
        click.echo(summary, err=as_json)
        if counts[inv.CHANGED] or counts[inv.MISSING]:
            click.echo("changed or missing artifacts are never signed: delete them and register the objects again "
                       "from a trusted client.", err=True)
        if counts[inv.INVALID] and not replace_invalid:
            click.echo("invalid signatures are left as they are; after review, --replace-invalid signs them too.",
                       err=True)
        if export:
            _export(db, todo, Path(export))
        if dry_run:
            sys.exit(0 if counts[inv.SIGNED] == len(entries) else 1)
        if not todo:
            return
        if not yes:
            click.confirm(f"Sign {len(todo)} artifact(s) of {database!r}, allowing every worker to load them?",
                          abort=True)
        done = inv.sign(db, key, todo, replace_invalid=replace_invalid)
        click.echo(f"signed {done} of {len(todo)}" + ("" if done == len(todo) else
                                                      " (the others changed since they were listed: run it again)"))
    finally:
        if not uri.startswith("mongomock://"):
            client.close()


def _export(db, entries, folder: Path) -> None:
    import gridfs

    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if e.digest is None or e.serializer == "composite":
            continue
        fs = gridfs.GridFS(db, collection=f"{e.collection}._artifacts")
        grid_out = fs.get(e.row_id) if e.kind == "file" else fs.get_last_version(filename=e.digest)
        path = folder / f"{e.digest}.{e.serializer or 'bin'}"
        path.write_bytes(grid_out.read())
        click.echo(f"wrote {path}", err=True)


COMMANDS = (sign_artifacts,)
