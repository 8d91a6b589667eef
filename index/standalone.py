"""A real Milvus server: PyPI's `milvus` wheel (Milvus 2.3.5 standalone, embedded etcd, local
storage), started under the workspace and reached by URI + token like any remote Milvus.

The wheel's `milvus-server` runs the standalone binary (`milvus run standalone`, which calls
itself `v2.3.5-lite` but is not milvus-lite): sealed segments, HNSW, aliases. This wraps its
config writer with what a service needs:

- **Authentication on.** Milvus 2.3.5 listens on every interface: its gRPC servers call
  `net.Listen(":<port>")`, and the `<component>.ip` settings only change the address it
  registers (checked here with `ss -ltn` after setting all of them to 127.0.0.1). So the
  proxy is started with `authorizationEnabled: true`, and on the first start root's default
  password is replaced by a random one kept in `<data>/root.token` (mode 0600): whoever reaches
  the port needs that token. The coordinators' internal ports (listed by `exposed_ports`) have
  no authentication: on a machine others can reach, firewall them (docs/scaling-out.md).
- **A clean stop.** SIGTERM, then wait (the wheel's own `stop()` kills after 1 s).
- **Ready means usable.** `start()` returns once the proxy answers an authenticated call.

Needs the `milvus` extra (`make venv` installs it); `server_available()` says whether it is.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from pathlib import Path

import grpc
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from index.connection import connect
from index.errors import IndexConnectionError
from mmrec.loopback import LOOPBACK, terminate

logger = logging.getLogger(__name__)

DEFAULT_PORT = 19530  # Milvus's own default; the next free one above it when taken
DEFAULT_USER, DEFAULT_PASSWORD = "root", "Milvus"  # Milvus's built-in account
TOKEN_FILE = "root.token"
START_TIMEOUT_S = 180.0
GRACEFUL_STOP_S = 5
COMPONENTS = (
    "rootCoord",
    "proxy",
    "queryCoord",
    "queryNode",
    "indexNode",
    "dataCoord",
    "dataNode",
)  # ~30 s measured on the 2 loaded cores; the first start unpacks 60 MB


def server_available() -> bool:
    """Whether the `milvus` wheel (the server binary) is installed."""
    try:
        import milvus  # noqa: F401
    except ImportError:
        return False
    return True


class StandaloneServer:
    """Milvus standalone with its data in `data_dir`, its proxy on `port` (default: 19530 or
    the next free port), until `stop()` (or the `with` block ends)."""

    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._server = None  # milvus.MilvusServer while running

    @property
    def uri(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port before start()")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def token(self) -> str:
        """`root:<password>`, as MMREC_MILVUS_TOKEN takes it."""
        return self.token_file.read_text().strip()

    @property
    def pid(self) -> int | None:
        """The server binary's process id while it runs."""
        proc = None if self._server is None else self._server.server_proc
        return None if proc is None else proc.pid

    def start(self, timeout_s: float = START_TIMEOUT_S) -> StandaloneServer:
        """Write the config, launch the binary, and return once the proxy answers the token."""
        if self._server is not None:
            raise RuntimeError(f"the Milvus server in {self.data_dir} is already running")
        try:
            from milvus import MilvusServer
        except ImportError:
            raise IndexConnectionError(
                "the Milvus server needs the `milvus` package: `make venv` installs it "
                "(pip install -e '.[milvus]')"
            ) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = MilvusServer(_config(self.data_dir, self.port), wait_for_started=False)
        try:
            server.start()  # resolves free ports, writes configs/milvus.yaml, launches the binary
        except RuntimeError as err:  # the port asked for is taken
            raise IndexConnectionError(f"cannot start the Milvus server: {err}") from None
        self._server = server
        self.port = server.listen_port
        try:
            server.wait_started(timeout=timeout_s * 1000)
            self._secure(time.monotonic() + timeout_s)
        except (TimeoutError, RuntimeError, IndexConnectionError) as err:
            log = self.data_dir / "logs" / "milvus-stdout.log"
            self.stop()
            raise IndexConnectionError(
                f"the Milvus server in {self.data_dir} did not start: {err} (see {log})"
            ) from err
        logger.warning(
            "Milvus %s serves %s; it listens on all interfaces (ports %s): keep them firewalled "
            "where other machines can reach this one (docs/scaling-out.md)",
            self.uri, self.data_dir, self.exposed_ports(),
        )  # fmt: skip
        return self

    def exposed_ports(self) -> list[int]:
        """The TCP ports the server binary listens on (all interfaces but etcd's)."""
        server = self._server
        ports = [int(server.config.get(k)) for k in server.config_keys if k.endswith("_port")]
        return sorted({*ports, server.webservice_port} - {int(server.config.get("etcd_port"))})

    def _secure(self, deadline: float) -> None:
        """Wait until the proxy answers; on the first start, replace root's default password
        by a random one, written to `token_file` before it is set (a start that stopped
        between the two finds it in `<token file>.new` and tries both)."""
        pending = self.token_file.with_suffix(".new")
        if not self.token_file.exists() and not pending.exists():
            pending.touch(mode=0o600)
            pending.write_text(f"{DEFAULT_USER}:{secrets.token_urlsafe(24)}\n")
        if pending.exists():
            new = pending.read_text().strip()
            client, token = self._client([f"{DEFAULT_USER}:{DEFAULT_PASSWORD}", new], deadline)
            if token != new:
                client.update_password(DEFAULT_USER, DEFAULT_PASSWORD, new.split(":", 1)[1])
            client.close()
            pending.rename(self.token_file)
        self._client([self.token], deadline)[0].close()

    def _client(self, tokens: list[str], deadline: float) -> tuple[MilvusClient, str]:
        """A client of the first of `tokens` the proxy accepts, once it answers (a wrong
        password reads as "Fail connecting", like a proxy still starting)."""
        while True:
            for token in tokens:
                try:
                    client = connect(self.uri, token=token, timeout=5.0)
                    client.list_collections()
                    return client, token
                except (IndexConnectionError, MilvusException, grpc.RpcError) as err:
                    failure = err  # a refused token: UNAUTHENTICATED, or "Fail connecting"
            if time.monotonic() > deadline:
                raise IndexConnectionError(f"the proxy at {self.uri} did not answer: {failure}")
            time.sleep(1.0)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the binary, wait for it to exit (SIGKILL after `timeout_s`)."""
        server, self._server = self._server, None
        if server is None:
            return
        terminate(server.server_proc, timeout_s)
        server.server_proc = None
        server.stop()  # closes its log files
        logger.info("Milvus server in %s stopped", self.data_dir)

    def environment(self) -> dict[str, str]:
        """The variables that point a process (`mmrec index build`, the bento) at this server."""
        return {"MMREC_MILVUS_URI": self.uri, "MMREC_MILVUS_TOKEN_FILE": str(self.token_file)}

    def __enter__(self) -> StandaloneServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _config(data_dir: Path, port: int | None):
    """The wheel's config for `data_dir`: authentication on, components registered on
    loopback (their calls to each other stay on this machine), a bounded graceful stop."""
    from milvus import MilvusServerConfig

    class LoopbackConfig(MilvusServerConfig):
        def try_bind_port(self, port: int) -> socket.socket | None:
            """The wheel's free-port check, with SO_REUSEADDR as the binary (Go) binds: without
            it a port in TIME_WAIT after a stop read as taken, and a restart moved the URI."""
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
                sock.listen()
                return sock
            except OSError:
                sock.close()
                return None

    config = LoopbackConfig(
        data_dir=str(data_dir), **({} if port is None else {"proxy_port": port})
    )
    config.set("authorization_enabled", True)
    for component in COMPONENTS:
        config.set(f"{component}.ip", LOOPBACK)
    # A standalone querynode's graceful stop waits for its segments to move to another node,
    # which it has not: with the default 1,800 s a SIGTERM took over 60 s (then SIGKILL).
    config.set("common.gracefulStopTimeout", GRACEFUL_STOP_S)
    return config


def default_data_dir(data_dir: Path) -> Path:
    """Where the workspace's Milvus server keeps its data: `<data>/index/milvus-standalone`."""
    return data_dir / "index" / "milvus-standalone"
