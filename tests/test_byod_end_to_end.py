"""Bring your own data, end to end, exactly as README and docs/own-data.md write it: on a fresh
folder holding only the data files,

    mmrec data import --events events.csv --items items.csv -w my_ws
    mmrec run -w my_ws
    mmrec serve demo -w my_ws --user-id USER

through the installed `mmrec` console script, then the bento that `serve demo` built, served
over HTTP. Two data sets, one module-scoped world each:

- `tests/fixtures/byod/`: integer ids; no SKUs, images on a third of the items, four
  categories of its own, only impressions, clicks and favourites;
- `tests/fixtures/byod-strings/`: the same log with sha1-hex user ids and SKU-like item ids
  (`B07X-12`, and `00417`: digits, still a string), covers on four items.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mmrec.settings import Settings
from mmrec.world_manifest import data_profile
from serving.bento_process import BentoServer, workspace_env
from serving.feed_browser import chromium_path, feed_page, wait_for_refresh
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
MMREC = Path(sys.executable).with_name("mmrec")  # the console script `pip install` made

pytestmark = pytest.mark.slow


def fixture_column(folder: Path, table: str, name: str) -> list[str]:
    with (folder / f"{table}.csv").open() as handle:
        return [row[name] for row in csv.DictReader(handle)]


@dataclass(frozen=True)
class OwnData:
    """A fixture taken through README's three commands, and the bento `serve demo` built."""

    fixture: Path
    settings: Settings
    demo: dict  # the answer `mmrec serve demo` printed
    bento: str  # the tag it built

    def clicked_user(self) -> str:
        """A user with clicks in the fixture (so with history online)."""
        users = fixture_column(self.fixture, "events", "user_id")
        types = fixture_column(self.fixture, "events", "event_type")
        return next(u for u, t in zip(users, types, strict=True) if t == "click")


def readme_commands(fixture: Path, folder: Path, user_id: str) -> OwnData:
    """Copy the fixture's files into `folder` and run README's own-data commands there."""
    folder.mkdir(parents=True)
    for name in ("events.csv", "items.csv", "images"):
        copy = shutil.copytree if (fixture / name).is_dir() else shutil.copy
        copy(fixture / name, folder / name)
    assert not (folder / "my_ws").exists()  # a fresh folder: the tool makes the workspace
    env = {**os.environ, "MMREC_TORCH_THREADS": "1"}
    outputs = []
    for command in (
        "data import --events events.csv --items items.csv -w my_ws",
        "run -w my_ws",
        f"serve demo -w my_ws --user-id {user_id}",
    ):
        done = subprocess.run(
            [str(MMREC), *command.split()],
            cwd=folder, env=env, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        assert done.returncode == 0, f"mmrec {command} exited {done.returncode}:\n{done.stderr}"
        outputs.append(done.stdout)
    demo = outputs[-1]
    bento = re.search(r"built bento (\S+)", demo)
    answer = re.search(r"^\{$.*^\}$", demo, re.MULTILINE | re.DOTALL)
    assert bento and answer, demo
    return OwnData(
        fixture, Settings.from_env(folder / "my_ws"), json.loads(answer.group()), bento[1]
    )


def serve(world: OwnData, log_dir: Path) -> Iterator[str]:
    env = {**workspace_env(world.settings), "MMREC_TORCH_THREADS": "1"}
    with BentoServer(world.bento, env, log_dir / "serve.log") as running:
        yield running.url


@pytest.fixture(scope="module")
def byod_world(tmp_path_factory: pytest.TempPathFactory) -> OwnData:
    return readme_commands(FIXTURES / "byod", tmp_path_factory.mktemp("byod") / "own", "1")


@pytest.fixture(scope="module")
def server(byod_world: OwnData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(byod_world, tmp_path_factory.mktemp("byod-bento"))


def test_the_platform_adapts_to_what_the_data_has(byod_world: OwnData) -> None:
    settings = byod_world.settings
    profile = data_profile(settings)
    assert profile.categories == ("fitness", "gaming", "garden", "kitchen")
    assert profile.ranking_tasks == ("click", "favorite") and not profile.has_skus
    ranking = json.loads((settings.artifacts_dir / "ranking" / "metrics.json").read_text())
    assert ranking["tasks"] == ["click", "favorite"]  # no towers for behaviours not in the data
    assert ranking["switches"]["use_cdr"] is False  # no product domain, no cross-domain block
    assert ranking["categories"] == list(profile.categories)
    recall = json.loads((settings.artifacts_dir / "recall" / "metrics.json").read_text())
    assert recall["categories"] == list(profile.categories)
    assert "visual" in recall["item_fields"]  # some items have covers


def test_running_again_skips_every_stage(byod_world: OwnData) -> None:
    output = run_cli("run", "-w", str(byod_world.settings.workspace))
    assert "0 stage(s) ran, 8 skipped" in " ".join(output.split())


def test_serve_demo_answered_for_the_users_own_id(byod_world: OwnData) -> None:
    items = {int(i) for i in fixture_column(FIXTURES / "byod", "items", "item_id")}
    assert byod_world.demo["user_id"] == 1 and not byod_world.demo["cold_start"]
    assert {item["item_id"] for item in byod_world.demo["items"]} <= items


def test_the_bento_serves_the_imported_catalog(server: str) -> None:
    items = {int(i) for i in fixture_column(FIXTURES / "byod", "items", "item_id")}
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


def test_fixtures_are_intact() -> None:
    """The fixtures' images are where items.csv says (relative to it)."""
    for name in ("byod", "byod-strings"):
        images = [p for p in fixture_column(FIXTURES / name, "items", "image") if p]
        assert images and all((FIXTURES / name / p).is_file() for p in images)


# ---------------------------------------------------------------------------------------------
# String ids: sha1 users, SKU-like items, through the same commands


STRINGS = FIXTURES / "byod-strings"


@pytest.fixture(scope="module")
def strings_world(tmp_path_factory: pytest.TempPathFactory) -> OwnData:
    user = fixture_column(STRINGS, "events", "user_id")[0]
    return readme_commands(STRINGS, tmp_path_factory.mktemp("strings") / "own", user)


@pytest.fixture(scope="module")
def strings_server(
    strings_world: OwnData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from serve(strings_world, tmp_path_factory.mktemp("strings-bento"))


def test_serve_demo_takes_and_answers_with_string_ids(strings_world: OwnData) -> None:
    items = set(fixture_column(STRINGS, "items", "item_id"))
    demo = strings_world.demo
    assert demo["user_id"] == fixture_column(STRINGS, "events", "user_id")[0]
    assert not demo["cold_start"] and demo["items"]
    assert {item["item_id"] for item in demo["items"]} <= items


def test_string_ids_over_http_recommend_events_and_the_feed(
    strings_world: OwnData, strings_server: str
) -> None:
    url, items = strings_server, set(fixture_column(STRINGS, "items", "item_id"))
    user = strings_world.clicked_user()
    resp = httpx.post(f"{url}/recommend", json={"user_id": user, "scene": "home", "k": 8})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["user_id"] == user and out["cold_start"] is False and out["degraded"] == []
    assert len(out["items"]) == 8 and {i["item_id"] for i in out["items"]} <= items
    # a click on an item the user was not shown before, by its own id
    clicked = next(i for i in ("00417", "B07X-31", "B04X-02") if i in items)
    event = {"user_id": user, "event_type": "click", "item_id": clicked, "position": "home"}
    resp = httpx.post(f"{url}/events", json={"events": [event]})
    assert resp.status_code == 200 and resp.json()["users_updated"] == 1, resp.text
    recent = httpx.get(f"{url}/feed/api/users/{user}/recent").json()
    assert recent["user_id"] == user and recent["item_ids"][0] == clicked
    assert set(recent["item_ids"]) <= items
    described = httpx.get(f"{url}/feed/api/items", params=[("id", clicked), ("id", "B04X-02")])
    assert [i["item_id"] for i in described.json()] == [clicked, "B04X-02"]
    cover = httpx.get(f"{url}/feed/media/B04X-02")
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
    users = httpx.get(f"{url}/feed/api/users").json()
    known = set(fixture_column(STRINGS, "events", "user_id"))
    assert users["sample"] and set(users["sample"]) <= known and users["new_user"] not in known


def test_a_new_shopper_by_string_id_starts_cold_and_keeps_the_clicks(strings_server: str) -> None:
    url, shopper = strings_server, "0b9c1d2e-7f00-4a5b-9c3d-2e1f0a9b8c7d"  # a UUID
    answer = httpx.post(f"{url}/recommend", json={"user_id": shopper, "scene": "home"}).json()
    assert answer["cold_start"] is True and answer["user_id"] == shopper
    event = {"user_id": shopper, "event_type": "click", "item_id": answer["items"][0]["item_id"]}
    assert httpx.post(f"{url}/events", json={"events": [event]}).status_code == 200
    again = httpx.post(f"{url}/recommend", json={"user_id": shopper, "scene": "home"}).json()
    assert again["cold_start"] is False


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/events", {"events": [{"user_id": "u", "event_type": "click", "item_id": "NOPE-1"}]},
         "events[0].item_id"),
        ("/events", {"events": [{"user_id": 1.5, "event_type": "click", "item_id": "B07X-01"}]},
         "user_id"),
        ("/recommend", {"user_id": {"id": "x"}, "scene": "home"}, "user_id"),
        ("/recommend", {"user_id": "x" * 129, "scene": "home"}, "user_id"),
        ("/recommend", {"user_id": "a\u0007b", "scene": "home"}, "user_id"),
    ],
)  # fmt: skip
def test_ids_of_the_wrong_kind_get_400_naming_the_field(
    strings_server: str, path: str, body: dict, field: str
) -> None:
    resp = httpx.post(f"{strings_server}{path}", json=body)
    assert resp.status_code == 400 and field in resp.text, resp.text


@pytest.mark.skipif(chromium_path() is None, reason="needs Chromium: apt-get install chromium")
def test_the_feed_page_in_chromium_works_with_string_ids(strings_server: str) -> None:
    items = set(fixture_column(STRINGS, "items", "item_id"))
    with feed_page(f"{strings_server}/feed/") as page:
        stamp = page.evaluate("() => document.body.dataset.loaded")
        assert page.input_value("#user") in set(fixture_column(STRINGS, "events", "user_id"))
        cards = page.locator("#feed .card")
        shown = [cards.nth(k).get_attribute("data-item-id") for k in range(cards.count())]
        assert shown and set(shown) <= items
        cards.nth(1).click()
        wait_for_refresh(page, stamp)
        assert page.locator("#recent .card").first.get_attribute("data-item-id") == shown[1]


def test_duckdb_and_features_show_use_the_string_ids(strings_world: OwnData) -> None:
    ws, user = str(strings_world.settings.workspace), strings_world.clicked_user()
    output = run_cli("sql", f"SELECT count(*) AS n FROM events WHERE user_id = '{user}'", "-w", ws)
    clicks = fixture_column(STRINGS, "events", "user_id").count(user)
    assert str(clicks) in output
    output = run_cli("sql", "SELECT item_id FROM items WHERE item_id = '00417'", "-w", ws)
    assert "00417" in output
    output = run_cli("features", "show", "--user-id", user, "--item-id", "00417", "-w", ws)
    assert user[:20] in output and "00417" in output
