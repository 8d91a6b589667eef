"""Servers on loopback ports for tests and benchmarks: a free port, a real `redis-server`.

The Redis online store profile (`MMREC_ONLINE_STORE=redis`) needs a running server; the
tests and `bench/soak_bench.py` start their own here, on a free port, so that they never
touch a server the user runs. The binary comes from the system (`apt-get install
redis-server`); nothing here installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
REDIS_BINARY = "redis-server"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def terminate(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM a child server and wait for it to exit cleanly; SIGKILL after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_installed() -> bool:
    """Whether `redis-server` is on PATH."""
    return shutil.which(REDIS_BINARY) is not None


class RedisServer:
    """A real redis-server on a free loopback port, which its owner may kill and start again.

    `appendonly`: every write is in the append-only file in `folder`, fsync'd before Redis
    answers, so a killed server restarts with all it acknowledged (as a production online
    store runs); without it the server keeps nothing on disk. `options`: more command-line
    options (e.g. "--requirepass", "...").
    """

    def __init__(
        self, folder: Path, *, appendonly: bool = False, options: Sequence[str] = ()
    ) -> None:
        binary = shutil.which(REDIS_BINARY)
        if binary is None:
            raise FileNotFoundError(f"no {REDIS_BINARY} on PATH: `apt-get install redis-server`")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"{LOOPBACK}:{self.port}"
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else []
        self.command = [
            binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(folder),
            "--save", "", "--appendonly", "no", *durability, *options,
        ]  # fmt: skip
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout_s: float = 10) -> RedisServer:
        """Launch on this server's port; return once it accepts connections."""
        self._proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{REDIS_BINARY} did not accept connections on {self.url}")

    def kill(self) -> None:
        """SIGKILL: the server dies without a chance to save or to close connections."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
