"""One way to open Milvus: `connect(uri)` for a milvus-lite file or a Milvus server URI.

URI forms (the same code path serves all of them, pymilvus picks the transport):
- `path/to/file.db`: embedded milvus-lite; its file is locked to ONE process at a time
  (a second process gets `IndexLockedError`); share it with `index.server.LiteServer`;
- `http://host:port` (or `https://`, `tcp://`): a `milvus-lite` server started by
  `mmrec index serve`, or Milvus standalone/distributed (port 19530 by default).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pymilvus import MilvusClient
from pymilvus.exceptions import ConnectionConfigException, MilvusException

from index.errors import IndexConnectionError, IndexLockedError
from mmrec.settings import Settings

logger = logging.getLogger(__name__)

# pymilvus pings idle channels every 10 s; gRPC servers (milvus-lite's included) allow one
# ping per 5 minutes without calls and then close the channel with "too_many_pings", which
# broke a client that sat idle through a minutes-long training run. Ping only during calls,
# and no more often than the servers allow.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}
_REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")
# milvus-lite accepts only these file names (see milvus_lite.server.Server).
_LITE_FILE_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,36}$")


def open_index(settings: Settings, uri: str | None = None) -> MilvusClient:
    """A client for `uri`, else the settings' index (MMREC_MILVUS_URI or the workspace's
    milvus-lite file), with the settings' token."""
    return connect(uri or settings.index_uri, token=settings.milvus_token)


def is_lite_file(uri: str) -> bool:
    """True for a local milvus-lite file URI (ends in `.db`, no scheme)."""
    return not uri.startswith(_REMOTE_SCHEMES) and uri.endswith(".db")


def check_uri(uri: str) -> str:
    """Return `uri` (a lite path made absolute) or raise IndexConnectionError saying what is wrong."""
    if not isinstance(uri, str) or not uri.strip():
        raise IndexConnectionError(
            "the Milvus URI is empty; pass a .db file path or http://host:port"
        )
    if uri.startswith(_REMOTE_SCHEMES):
        return uri
    if not uri.endswith(".db"):
        raise IndexConnectionError(
            f"Milvus URI {uri!r} is neither a milvus-lite file (must end in .db) "
            "nor a server address (http://host:port, https://..., tcp://...)"
        )
    path = Path(uri).expanduser().resolve()
    if not _LITE_FILE_NAME.match(path.name):
        raise IndexConnectionError(
            f"milvus-lite file name {path.name!r} must be at most 36 characters of "
            "letters, digits, '.', '-' or '_'"
        )
    return str(path)


def connect(uri: str, *, token: str = "", timeout: float | None = 30.0) -> MilvusClient:
    """A MilvusClient for `uri` (see module doc); creates a lite file's parent folder.

    `token`: "user:password" or an API key for a secured server (empty: no authentication).

    Raises IndexLockedError when another process holds the lite file, IndexConnectionError
    when the URI is malformed or the server does not answer.
    """
    target = check_uri(uri)
    if is_lite_file(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MilvusClient(
            uri=target,
            token=token,
            timeout=timeout,
            grpc_options=GRPC_OPTIONS,
        )
    except ConnectionConfigException as err:
        if is_lite_file(target) and Path(target).exists():
            raise IndexLockedError(
                f"milvus-lite file {target} is open in another process (milvus-lite locks a file "
                "to one process); run `mmrec index serve --db-file ...` once and point every "
                "process at its http:// URI"
            ) from err
        raise IndexConnectionError(f"cannot open Milvus at {target}: {err}") from err
    except MilvusException as err:
        raise IndexConnectionError(f"cannot connect to Milvus at {target}: {err}") from err
    logger.debug("connected to Milvus at %s", target)
    return client


def as_client(client_or_uri: MilvusClient | str) -> MilvusClient:
    """`client_or_uri` itself when it is a client, else `connect(client_or_uri)`."""
    return client_or_uri if isinstance(client_or_uri, MilvusClient) else connect(client_or_uri)
