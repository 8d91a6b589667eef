"""Shared fixtures: one tiny world per test session, built through the real `mmrec` CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from index.server import LiteServer
from mmrec.io import write_json
from mmrec.loopback import RedisServer, redis_installed
from mmrec.settings import Settings
from mmrec.workspace import init_workspace

TINY_SEED = 1


def pytest_configure(config: pytest.Config) -> None:
    """Every test workspace keeps its models in its own store (`data/bentoml`): a BENTOML_HOME
    from the caller's shell would put them all in one."""
    os.environ.pop("BENTOML_HOME", None)


def make_workspace(root: Path) -> Settings:
    """A workspace in `root` (new or empty), as `mmrec init` makes it."""
    init_workspace(root)
    return Settings(workspace=root)


def data_workspace(root: Path) -> Settings:
    """A workspace whose raw data is only a manifest (one day): past every stage's workspace
    check, before any stage ran (for the stages' own 'run X first' messages)."""
    settings = make_workspace(root)
    manifest = {"source": "import", "days": ["2025-03-01"], "start": "2025-03-01T00:00:00+00:00",
                "end": "2025-03-02T00:00:00+00:00"}  # fmt: skip
    write_json(manifest, settings.raw_dir / "manifest.json")
    return settings


def run_cli(*args: str) -> str:
    """Run `mmrec ARGS` in-process; fail the test with the output when it exits non-zero."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (
        f"mmrec {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    )
    return result.output


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` and everything in it refuse writes until the block ends: chmod for a normal
    user, the immutable attribute for root (whom permissions do not stop)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
    else:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
        else:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; more threads spin against other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A generated tiny world with offline sources (content embeddings included), an applied
    repo and a materialized SQLite online store. Read-only for tests: copy it (or make your own) to change things."""
    settings = make_workspace(tmp_path_factory.mktemp("tiny"))
    ws = str(settings.workspace)
    run_cli("generate", "--scale", "tiny", "--seed", str(TINY_SEED), "--workspace", ws)
    run_cli("features", "build", "--workspace", ws)
    run_cli("content", "encode", "--workspace", ws)
    run_cli("features", "apply", "--workspace", ws)
    run_cli("features", "materialize", "--workspace", ws)
    return settings


@pytest.fixture(scope="session")
def feature_store(tiny_world: Settings):
    from mmrec.feast_store import open_store

    return open_store(tiny_world)


def redis_server(
    folder: Path, *, appendonly: bool = False, options: Sequence[str] = ()
) -> RedisServer:
    """A started `mmrec.loopback.RedisServer`; skips the test when redis-server is missing."""
    if not redis_installed():  # README's `make test` needs nothing installed by hand: skip, say how
        pytest.skip("no redis-server: `apt-get install redis-server` runs the Redis tests")
    return RedisServer(folder, appendonly=appendonly, options=options).start()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, without persistence; stopped at the end."""
    server = redis_server(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_world(tiny_world: Settings, redis_url: str) -> Settings:
    """The tiny world's features materialized into the Redis online store as well."""
    return materialized_into_redis(tiny_world, redis_url)


def materialized_into_redis(settings: Settings, redis_url: str) -> Settings:
    """`settings` on the Redis online store at `redis_url`, its features applied and
    materialized there (`mmrec features apply/materialize --online-store redis`)."""
    ws = str(settings.workspace)
    runner_env = {"MMREC_REDIS_URL": redis_url}
    for args in (["features", "apply"], ["features", "materialize"]):
        result = CliRunner().invoke(
            app, [*args, "--workspace", ws, "--online-store", "redis"], env=runner_env
        )
        assert result.exit_code == 0, result.output
    return settings.replace(online_store="redis", redis_url=redis_url)


@pytest.fixture(scope="session")
def index_server(tiny_world: Settings) -> Iterator[LiteServer]:
    """The tiny world's milvus-lite file served on loopback, so many processes can read it."""
    path = tiny_world.data_dir / "index" / "milvus.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with LiteServer(path) as server:
        yield server


@pytest.fixture(scope="session")
def trained_world(tiny_world: Settings, index_server: LiteServer) -> Settings:
    """The tiny world with its training sets, a ranker and a recall model in the session's
    BentoML store (one epoch each), and the content index built from the recall model."""
    from models.store import stored_model

    ws = str(tiny_world.workspace)
    run_cli("train", "build-sets", "--workspace", ws)
    run_cli("train", "rank", "--epochs", "1", "--workspace", ws)
    run_cli("train", "recall", "--epochs", "1", "--workspace", ws)
    # pin these models: a test may train newer ones of the same names into this workspace
    tags = {
        name: str(stored_model(tiny_world, f"{name}:latest").tag) for name in ("recall", "ranking")
    }
    run_cli("index", "build", "--model", tags["recall"], "--uri", index_server.uri, "-w", ws)
    return tiny_world.replace(extra={**tiny_world.extra, **tags})


@pytest.fixture(scope="session")
def serving_config(trained_world: Settings):
    """The serving config with the trained world's own models (not whatever is latest)."""
    from serving.config import ServingConfig

    extra = trained_world.extra
    return ServingConfig(recall_model=extra["recall"], rank_model=extra["ranking"])


@pytest.fixture(scope="module")
def serving_world(trained_world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private copy of the trained world per test module: serving tests push events and
    break backends on purpose (the index is read through the session's server)."""
    from tests.analysis_fixtures import copy_world

    return copy_world(trained_world, tmp_path_factory.mktemp("serving") / "ws")


@pytest.fixture(scope="module")
def pipeline(serving_world: Settings, index_server: LiteServer, serving_config):
    """The serving pipeline (serving.pipeline.RecommendationPipeline) on the module's world copy."""
    from serving.pipeline import RecommendationPipeline

    return RecommendationPipeline(serving_world, serving_config, milvus_uri=index_server.uri)


@pytest.fixture(scope="module")
def server(
    serving_world: Settings, serving_config, index_server: LiteServer, tmp_path_factory
) -> Iterator[str]:
    """The bento built from this repo with the trained world's models, served over the module's
    world copy and the session's index (`bentoml build` + `bentoml serve`: the README's way)."""
    from serving.bento_process import BentoServer, build_bento, workspace_env

    models = {
        "MMREC_RECALL_MODEL": serving_config.recall_model,
        "MMREC_RANK_MODEL": serving_config.rank_model,
    }
    env = {
        **workspace_env(serving_world),
        **models,
        "MMREC_MILVUS_URI": index_server.uri,
        "MMREC_TORCH_THREADS": "1",
    }
    log_file = tmp_path_factory.mktemp("bento") / "serve.log"
    with BentoServer(build_bento(env), env, log_file) as running:
        yield running.url
