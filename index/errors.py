"""Errors of the index layer: all ValueError subclasses whose message says what to fix."""

from __future__ import annotations

from mmrec.errors import UserError


class VectorIndexError(UserError):
    """Base class: bad input or state for the vector index."""


class IndexConnectionError(VectorIndexError):
    """The index URI is malformed or its backend cannot be opened."""


class IndexLockedError(IndexConnectionError):
    """A milvus-lite file is already open in another process (milvus-lite locks it to one)."""


class UnknownCollectionError(VectorIndexError):
    """The named collection or alias does not exist at this URI."""


class DimensionMismatchError(VectorIndexError):
    """Vectors do not have the collection's dimension."""


class InvalidContentError(VectorIndexError):
    """Vectors or item metadata handed to a build, upsert or query are malformed."""


class VersionInUseError(VectorIndexError):
    """A build would overwrite the version readers are using now."""
