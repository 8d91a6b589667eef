"""A `milvus-lite` gRPC server on loopback, so several processes share one milvus-lite file.

Embedded milvus-lite locks its file to one process. milvus-lite 2.5.1 has no `server`
subcommand (its console script is a dump tool), but its `milvus_lite.server.Server` starts
the bundled C++ binary on a TCP address instead of a private socket; this wraps that with
a free port, a readiness wait and a clean stop. Clients then use `connect(server.uri)`,
exactly as they would a Milvus standalone server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from milvus_lite.server import Server

from index.connection import check_uri, connect, held_by_another_process
from index.errors import IndexConnectionError, IndexLockedError
from mmrec.loopback import LOOPBACK, free_port, terminate

logger = logging.getLogger(__name__)


class LiteServer:
    """Serve one milvus-lite file at `http://host:port` until `stop()` (or the `with` block ends).

    The serving process holds the file's lock, so an embedded open elsewhere fails with
    IndexLockedError rather than corrupting the file.
    """

    def __init__(self, db_file: str | Path, host: str = LOOPBACK, port: int | None = None) -> None:
        self.db_file = Path(check_uri(str(db_file)))
        self.host = host
        self.port = port or free_port(host)
        self._server: Server | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The variables that point a process (`mmrec index build`, the bento) at this server."""
        return {"MMREC_MILVUS_URI": self.uri}

    def start(self, timeout_s: float = 30.0) -> LiteServer:
        """Launch the server and return once it answers a request; raise if it cannot."""
        if self._server is not None:
            raise RuntimeError(f"milvus-lite server for {self.db_file} is already running")
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        # asked first: a refused milvus-lite Server unlinks the holder's lock file when dropped
        if held_by_another_process(str(self.db_file)):
            raise IndexLockedError(f"cannot serve {self.db_file}: another process holds it")
        server = Server(str(self.db_file), address=f"{self.host}:{self.port}")
        if not server.init() or not server.start():
            server.stop()
            raise IndexLockedError(
                f"cannot serve {self.db_file}: another process holds it or the port "
                f"{self.port} is taken (see the milvus-lite log above)"
            )
        self._server = server
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                connect(self.uri, timeout=2.0).list_collections()
                break
            except IndexConnectionError as err:
                if time.monotonic() > deadline:
                    self.stop()
                    raise IndexConnectionError(
                        f"milvus-lite server at {self.uri} did not answer in {timeout_s:.0f} s"
                    ) from err
                time.sleep(0.1)
        logger.info("milvus-lite serving %s at %s", self.db_file, self.uri)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server, wait for it to exit (SIGKILL after `timeout_s`), release the lock."""
        server, self._server = self._server, None
        if server is None:
            return
        # Server.stop() alone waits 2 s then SIGKILLs; SIGTERM first lets the binary exit cleanly.
        terminate(server._p, timeout_s)
        server.stop()
        logger.info("milvus-lite server for %s stopped", self.db_file)

    def __enter__(self) -> LiteServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
