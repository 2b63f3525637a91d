"""The store floor, shared by the client side and the cluster side.

Metadata collections, GridFS artifacts, job records, the document layout of
derived state (outputs, neighbourhoods), watcher rows, model loading, the raw
database backends, and the :class:`~superduperdb.store.context.Target` /
:class:`~superduperdb.store.context.Context` that jobs and the master open.
Nothing here imports the client side (``services``, ``jobs``, the facade).

Floor: the store, shared by both sides. May import pure compute (``models``, ``types``,
``index``, ``training``) and the leaves; never ``tasks``, ``master`` or the client side.
"""

from .artifacts import ArtifactStore
from .metadata import MetadataStore

__all__ = ["ArtifactStore", "MetadataStore"]
