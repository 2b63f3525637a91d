"""The embedded store: an in-process MongoDB stand-in that behaves like a server.

It is mongomock's API over stores that keep an ``_id`` map and the field indexes
``create_index`` declares (see :mod:`.storage`, :mod:`.indexes`), with linear
cursors, ``bulk_write`` and the 16 MiB document limit (:mod:`.client`). The URI
``mongomock://<name>`` opens one in memory, shared by every handle in the process;
``file:///path`` (``superduperdb.connect("./my-data")``) opens one kept in that folder
(:mod:`.folder`: a journal of every change, snapshots, a lock).

Floor: the store (shared by both sides). May import the rest of ``store``, pure compute and
the leaves.
"""

from .client import MAX_BSON_SIZE, EmbeddedClient, EmbeddedCollection, EmbeddedDatabase

__all__ = ["MAX_BSON_SIZE", "EmbeddedClient", "EmbeddedCollection", "EmbeddedDatabase"]
