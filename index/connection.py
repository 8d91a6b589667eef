"""One way to open Milvus: `connect(uri)` for a milvus-lite file or a Milvus server URI.

URI forms (the same code path serves all of them, pymilvus picks the transport):
- `path/to/file.db`: embedded milvus-lite; its file is locked to ONE process at a time
  (a second process gets `IndexLockedError`); share it with `index.server.LiteServer`.
  `connect` starts this process's server and waits until it accepts connections
  (`start_lite_server`: pymilvus alone sent its first call 0.5 s after the launch);
- `http://host:port` (or `https://`, `tcp://`): a `milvus-lite` server started by
  `mmrec index serve`, or Milvus standalone/distributed (port 19530 by default).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
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
# While a starting milvus-lite server's socket is not there yet, gRPC retries the connection
# after these back-offs (its defaults start at 1 s and grow to 120 s).
_LITE_READY_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
_LITE_CHECK_S = 0.25  # how often the wait for a starting server checks that it is alive


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
        start_lite_server(target, timeout if timeout is not None else 30.0)
    try:
        client = MilvusClient(
            uri=target,
            token=token,
            timeout=timeout,
            grpc_options=GRPC_OPTIONS,
        )
    except ConnectionConfigException as err:
        if is_lite_file(target) and Path(target).exists():
            raise _locked(target) from err
        raise IndexConnectionError(f"cannot open Milvus at {target}: {err}") from err
    except MilvusException as err:
        raise IndexConnectionError(f"cannot connect to Milvus at {target}: {err}") from err
    logger.debug("connected to Milvus at %s", target)
    return client


def start_lite_server(path: str, timeout_s: float) -> str:
    """Start this process's milvus-lite server for file `path` (or find it running) and
    return its `unix:` address once the server accepts connections.

    Why this wait: pymilvus hands a `.db` URI to milvus-lite's server manager, whose
    `Server.start()` only checks that the child is still alive 0.5 s after launching it, and
    then sends its first call (`Connect`) without gRPC's wait-for-ready, which fails at once
    while the child is still initialising. Cold (first run: the binary and its libraries read
    from disk) and under load that takes longer than 0.5 s: the first `mmrec index build`
    failed with "Fail connecting to server on unix:...", its process exited, the lock the
    child watches was released, and the child, once up, exited in the same millisecond.
    Waiting here for the socket to accept connections removes that race; a child that exits
    meanwhile is reported, not waited for.

    Raises IndexLockedError when another process holds the file, IndexConnectionError when
    the server exits or does not answer within `timeout_s`.
    """
    from milvus_lite.server_manager import server_manager_instance

    key = str(Path(path).resolve())  # the manager's key
    if key not in server_manager_instance._servers and held_by_another_process(path):
        raise _locked(path)
    address = server_manager_instance.start_and_get_uri(path)
    if address is None:
        if Path(path).exists():
            raise _locked(path)
        raise IndexConnectionError(f"cannot start milvus-lite for {path} (see its log above)")
    server = server_manager_instance._servers[key]
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address, options=_LITE_READY_OPTIONS) as channel:
        ready = grpc.channel_ready_future(channel)
        while True:
            try:
                ready.result(timeout=_LITE_CHECK_S)
                return address
            except grpc.FutureTimeoutError:
                pass
            if (code := server._p.poll()) is not None or time.monotonic() > deadline:
                ready.cancel()
                server_manager_instance.release_server(path)
                what = f"exited with code {code}" if code is not None else "did not answer"
                raise IndexConnectionError(
                    f"milvus-lite server for {path} {what} within {timeout_s:.0f} s of its "
                    "start (see its log above)"
                )


# Exit 1 when another process holds the lock milvus-lite takes on `.<db file>.lock`.
_PROBE_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as lock:
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)
"""


def held_by_another_process(path: str) -> bool:
    """Whether another process serves milvus-lite file `path` (holds its lock file).

    Asked before milvus-lite tries: a refused `Server` object unlinks the holder's lock file
    when it is dropped (`Server.stop`, run by `__del__`), after which a third process opened
    the same file beside the running server. The probe runs in a child process because
    closing any descriptor of a file drops this process's own POSIX locks on it (a
    `LiteServer` here would lose its lock).
    """
    lock = Path(path).parent / f".{Path(path).name}.lock"
    if not lock.exists():
        return False
    probe = subprocess.run([sys.executable, "-c", _PROBE_LOCK, str(lock)], timeout=60)
    return probe.returncode == 1


def _locked(path: str) -> IndexLockedError:
    return IndexLockedError(
        f"milvus-lite file {path} is open in another process (milvus-lite locks a file to one "
        "process); run `mmrec index serve --db-file ...` once and point every process at its "
        "http:// URI"
    )


def is_server(client: MilvusClient) -> bool:
    """Whether `client` talks to a Milvus server (standalone or distributed: sealed segments,
    HNSW) rather than milvus-lite (embedded or `LiteServer`), which answers UNIMPLEMENTED to
    GetVersion. pymilvus logs that answer as an error: it is expected here, so not shown."""
    quiet = logging.getLogger("pymilvus.decorators")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client.get_server_version()
        return True
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return False
    finally:
        quiet.setLevel(level)


def as_client(client_or_uri: MilvusClient | str) -> MilvusClient:
    """`client_or_uri` itself when it is a client, else `connect(client_or_uri)`."""
    return client_or_uri if isinstance(client_or_uri, MilvusClient) else connect(client_or_uri)
