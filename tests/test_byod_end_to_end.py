"""Bring your own data, end to end: a real-format CSV data set (no SKUs, images on a third of
the items, four categories of its own, only impressions, clicks and favourites) goes
`mmrec data import` -> `mmrec run` -> the bento, served over HTTP, with no code change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from index.server import LiteServer
from mmrec.settings import Settings
from mmrec.world_manifest import data_profile
from serving.bento_process import BentoServer, build_bento, workspace_env
from tests.conftest import make_workspace, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "byod"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def byod_world(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> Iterator[Settings]:
    """The fixture imported and run through every stage, its index served over a URI."""
    settings = make_workspace(tmp_path_factory.mktemp("byod"))
    ws = str(settings.workspace)
    run_cli("data", "import", "--events", str(FIXTURE / "events.csv"),
            "--items", str(FIXTURE / "items.csv"), "-w", ws)  # fmt: skip
    with LiteServer(settings.data_dir / "index" / "milvus.db") as lite:
        monkeypatch_module.setenv("MMREC_MILVUS_URI", lite.uri)
        monkeypatch_module.setenv("MMREC_TORCH_THREADS", "1")
        run_cli("run", "-w", ws)
        yield Settings.from_env(settings.workspace)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_platform_adapts_to_what_the_data_has(byod_world: Settings) -> None:
    profile = data_profile(byod_world)
    assert profile.categories == ("fitness", "gaming", "garden", "kitchen")
    assert profile.ranking_tasks == ("click", "favorite") and not profile.has_skus
    ranking = json.loads((byod_world.artifacts_dir / "ranking" / "metrics.json").read_text())
    assert ranking["tasks"] == ["click", "favorite"]  # no towers for behaviours not in the data
    assert ranking["switches"]["use_cdr"] is False  # no product domain, no cross-domain block
    assert ranking["categories"] == list(profile.categories)
    recall = json.loads((byod_world.artifacts_dir / "recall" / "metrics.json").read_text())
    assert recall["categories"] == list(profile.categories)
    assert "visual" in recall["item_fields"]  # some items have covers


def test_running_again_skips_every_stage(byod_world: Settings) -> None:
    output = run_cli("run", "-w", str(byod_world.workspace))
    assert "0 stage(s) ran, 8 skipped" in " ".join(output.split())


@pytest.fixture(scope="module")
def server(byod_world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**workspace_env(byod_world), "MMREC_TORCH_THREADS": "1"}
    log_file = tmp_path_factory.mktemp("byod-bento") / "serve.log"
    with BentoServer(build_bento(env), env, log_file) as running:
        yield running.url


def test_the_bento_serves_the_imported_catalog(server: str) -> None:
    items = {int(i) for i in _csv_column(FIXTURE / "items.csv", "item_id")}
    resp = httpx.post(f"{server}/recommend", json={"user_id": 1, "scene": "home", "k": 5})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert len(out["items"]) == 5 and out["degraded"] == []
    for item in out["items"]:
        assert item["item_id"] in items
        assert set(item["task_scores"]) == {"click", "favorite"}
        assert "s2v" not in item["found_by"]
    event = {"user_id": 1, "event_type": "click", "item_id": out["items"][0]["item_id"]}
    resp = httpx.post(f"{server}/events", json={"events": [event]})
    assert resp.status_code == 200, resp.text


def _csv_column(path: Path, name: str) -> list[str]:
    header, *rows = path.read_text().splitlines()
    index = header.split(",").index(name)
    return [row.split(",")[index] for row in rows]


def test_fixture_is_intact() -> None:
    """The fixture's images are where items.csv says (relative to it)."""
    images = [p for p in _csv_column(FIXTURE / "items.csv", "image") if p]
    assert images and all((FIXTURE / p).is_file() for p in images)
