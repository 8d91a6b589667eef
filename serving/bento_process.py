"""Build this repo's bento and run `bentoml serve` as a child process (demo, tests, bench).

Thin wrappers over the `bentoml` CLI, the same commands README tells users to run, so what
the demo and the end-to-end tests exercise is what a user gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path
from types import TracebackType

import httpx

from mmrec.errors import UserError
from mmrec.loopback import free_port, terminate
from mmrec.settings import REPO_ROOT, Settings

BENTOML = str(Path(sys.executable).with_name("bentoml"))
# The exact versions the bento ships (`[tool.bentoml.build.python] requirements_txt`): every
# distribution `[project] dependencies` pulls in, as installed where the bento is built.
# `make pins` rewrites it; tests/test_serving_pins.py fails when it drifts from the venv.
PINS_FILE = REPO_ROOT / "serving" / "requirements.lock.txt"
# The same for the development venv (`.[dev,spark,milvus,baselines]`): `make venv` installs under it as pip
# constraints, so a clean clone gets these versions, not whatever PyPI released since.
DEV_PINS_FILE = REPO_ROOT / "requirements-dev.lock.txt"
DEV_EXTRAS = ("dev", "spark", "milvus", "baselines")


def workspace_env(settings: Settings) -> dict[str, str]:
    """What `bentoml build` / `serve` need to find this workspace's models, data and index."""
    settings.model_store_dir.mkdir(parents=True, exist_ok=True)
    return settings.environment()


class BentoError(UserError):
    """`bentoml build` or `bentoml serve` failed; the message carries its output."""


def build_bento(env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """`bentoml build` of the repo (config in pyproject.toml); returns the bento tag."""
    out = subprocess.run(
        [BENTOML, "build", "-o", "tag", str(REPO_ROOT)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    tags = [line for line in out.stdout.splitlines() if line.startswith("__tag__:")]
    if out.returncode != 0 or not tags:
        raise BentoError(f"bentoml build failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return tags[-1].removeprefix("__tag__:")


def pinned_requirements(
    extras: tuple[str, ...] = (), pyproject: Path = REPO_ROOT / "pyproject.toml"
) -> list[str]:
    """`name==version` of every installed distribution the project's dependencies (and those
    of its optional `extras`) need, following extras and environment markers; sorted by name.
    Raises BentoError naming a dependency that is not installed."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads(pyproject.read_text())["project"]
    roots = project["dependencies"] + [
        text for extra in extras for text in project["optional-dependencies"][extra]
    ]
    pending = [(Requirement(text), "") for text in roots]
    pins: dict[str, str] = {}
    visited: set[tuple[str, str]] = set()
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BentoError(
                f"{requirement} is not installed: `make venv`, then `make pins`"
            ) from None
        pins[name] = f"{name}=={dist.version}"
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) in visited:
                continue
            visited.add((name, wanted))
            pending += [(Requirement(text), wanted) for text in dist.requires or []]
    return [pins[name] for name in sorted(pins)]


class BentoServer:
    """`bentoml serve TAG` on a loopback port until `stop()`; `start()` waits for /readyz.

    TAG is a built bento's tag, or a service's import path ("module:Class") found from
    `working_dir`."""

    def __init__(
        self,
        tag: str,
        env: dict[str, str],
        log_file: Path,
        port: int | None = None,
        working_dir: Path | None = None,
    ):
        self.tag = tag
        self.working_dir = working_dir
        self.env = {**os.environ, **env}
        self.log_file = log_file
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300) -> BentoServer:
        with self.log_file.open("w") as sink:
            command = [BENTOML, "serve", self.tag, "--host", "127.0.0.1", "--port", str(self.port)]
            if self.working_dir:
                command += ["--working-dir", str(self.working_dir)]
            self._proc = subprocess.Popen(
                command,
                env=self.env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.log_file.parent,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise BentoError(f"bentoml serve exited {self._proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BentoError(f"the bento was not ready in {timeout_s:.0f} s:\n{self.log()}")
            time.sleep(0.5)

    @property
    def pid(self) -> int | None:
        """The `bentoml serve` process (its workers are its children)."""
        return None if self._proc is None else self._proc.pid

    def log(self, chars: int = 4000) -> str:
        return self.log_file.read_text()[-chars:] if self.log_file.exists() else ""

    def stop(self, timeout_s: float = 30) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)

    def __enter__(self) -> BentoServer:
        return self.start()

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
