"""Database access: metadata collections, GridFS artifacts, model outputs."""

from .artifacts import ArtifactStore
from .metadata import MetadataStore

__all__ = ["ArtifactStore", "MetadataStore"]
