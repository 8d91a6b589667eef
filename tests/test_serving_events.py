"""POST /events is durable (issue #16, part 1): every accepted event is in the event log before
the answer, survives the next features build + materialize, and reaches the next training
set; a retried POST is stored once; a log that cannot be written acknowledges nothing.

The world here is the session's tiny world re-registered in a workspace of its own (a fresh
`feast apply`: applying over a copied registry would tear down the original's online tables),
so rebuilding its features touches nothing another test reads.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from feature_pipelines import layout
from ingest.contract import DataContractError
from ingest.event_log import Catalog, EventLog, EventLogUnavailable, contract_rows
from mmrec import event_log
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.world_manifest import world_days, world_end
from serving.events import EventIntake
from serving.schemas import BehaviourEvent
from tests.conftest import materialized_into_redis, redis_server, run_cli, unwritable

pytestmark = pytest.mark.slow


def fresh_world(tiny_world: Settings, root: Path, redis_url: str | None = None) -> Settings:
    """A copy of the tiny world with its own registry and online store (SQLite, or the Redis
    server at `redis_url`), applied and materialized."""
    shutil.copytree(tiny_world.workspace, root, ignore=shutil.ignore_patterns("feast", "bentoml"))
    settings = Settings(workspace=root)
    if redis_url is not None:
        return materialized_into_redis(settings, redis_url)
    for args in (["features", "apply"], ["features", "materialize"]):
        run_cli(*args, "--workspace", str(root))
    return settings


@pytest.fixture(scope="module")
def own_world(tiny_world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The tiny world's data (raw, offline sources, content) under its own registry and online
    store, applied and materialized."""
    return fresh_world(tiny_world, tmp_path_factory.mktemp("events") / "ws")


def intake_for(settings: Settings) -> EventIntake:
    """The service's /events handler on `settings`, answering at the data's end (world clock)."""
    now = int(world_end(settings).timestamp())
    return EventIntake(settings, open_store(settings), lambda: now)


def click_seq(settings: Settings, user_id: int) -> list[int]:
    """The user's online click sequence, on the settings' online store."""
    values = open_store(settings).get_online_features(
        features=["user_behavior_seq:item_click_seq"], entity_rows=[{"user_id": user_id}]
    )
    return list(values.to_dict()["item_click_seq"][0] or [])


def test_posted_events_survive_a_rebuild_and_reach_the_next_training_set(
    own_world: Settings,
) -> None:
    ws = str(own_world.workspace)
    user = 7
    before = click_seq(own_world, user)
    item = next(i for i in range(1, 400) if i not in before)
    events = [
        BehaviourEvent(user_id=user, event_type="impression", item_id=item, event_id="imp-1"),
        BehaviourEvent(user_id=user, event_type="click", item_id=item, event_id="click-1"),
        BehaviourEvent(user_id=user, event_type="sku_click", sku_id=3, event_id="sku-1"),
    ]
    answer = intake_for(own_world).accept(events)
    assert (answer.appended, answer.duplicates, answer.degraded) == (3, 0, [])
    assert answer.event_ids == ["imp-1", "click-1", "sku-1"]
    assert click_seq(own_world, user)[:2] == [item, *before[:1]]

    retry = intake_for(own_world).accept(events)  # the client did not see the first answer
    assert (retry.appended, retry.duplicates, retry.users_updated) == (0, 3, 0)
    assert click_seq(own_world, user).count(item) == 1

    served_day = world_days(own_world)[-1]
    assert event_log.log_days(own_world) == [served_day]
    for args in (["features", "build"], ["features", "materialize"]):
        run_cli(*args, "--workspace", ws)
    assert click_seq(own_world, user)[0] == item  # kept, not overwritten by the batch
    assert click_seq(own_world, user).count(item) == 1
    snapshot_time = pd.Timestamp(served_day, tz="UTC") + pd.Timedelta(days=1)
    offline = pd.read_parquet(
        layout.partition_path(own_world, layout.USER_BEHAVIOR_SEQ, snapshot_time.to_pydatetime())
    )
    row = offline[(offline.user_id == user) & (offline.event_timestamp == snapshot_time)].iloc[0]
    assert list(row.item_click_seq).count(item) == 1 and row.item_click_seq[0] == item
    assert row.sku_click_seq[0] == 3

    run_cli("train", "build-sets", "--workspace", ws)
    ranking = pd.read_parquet(own_world.training_set_dir("ranking_v1") / "split=test")
    shown = ranking[(ranking.user_id == user) & (ranking.item_id == item)]
    assert len(shown) == 1 and shown.label_click.iloc[0] == 1
    recall = pd.read_parquet(own_world.training_set_dir("recall_v1") / "split=test")
    clicked = recall[(recall.user_id == user) & (recall.item_id == item) & (recall.label == 1)]
    assert list(clicked.channel) == ["u2v"]


@pytest.mark.parametrize("online_store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_materialize_alone_keeps_every_posted_event(
    tiny_world: Settings, tmp_path: Path, online_store: str
) -> None:
    """`mmrec features materialize` (without `features build` first) folds the posted events
    into the offline sources before loading them: the online sequence loses none of 40 clicks
    (it used to be set back to the offline one: 0 of 40 kept)."""
    redis = redis_server(tmp_path / "redis") if online_store == "redis" else None
    try:
        world = fresh_world(tiny_world, tmp_path / "ws", redis.url if redis else None)
        user = 11
        before = click_seq(world, user)
        items = [i for i in range(1, 400) if i not in before][:40]
        clicks = [BehaviourEvent(user_id=user, event_type="click", item_id=i) for i in items]
        intake_for(world).accept(clicks)
        posted = click_seq(world, user)
        assert sorted(posted[:40]) == sorted(items)

        flags = ["--online-store", online_store]
        env = {"MMREC_REDIS_URL": redis.url} if redis else {}
        result = CliRunner().invoke(
            app, ["features", "materialize", "--workspace", str(world.workspace), *flags], env=env
        )
        assert result.exit_code == 0, result.output
        assert click_seq(world, user) == posted  # every posted click kept, in the same order
    finally:
        if redis is not None:
            redis.stop()


def test_the_pipeline_reads_each_event_id_once_even_when_logged_twice(
    own_world: Settings,
) -> None:
    """A repeat that got past the append-time check (e.g. a crash before its ids were
    recorded) is dropped where the pipelines read the log."""
    import duckdb

    intake = intake_for(own_world)
    event = BehaviourEvent(user_id=9, event_type="click", item_id=5, event_id="twice")
    intake.accept([event])
    for path in event_log.log_dir(own_world).glob("event_ids.sqlite3*"):
        path.unlink()  # forget the ids (the record and its write-ahead log)
    assert intake.accept([event]).appended == 1
    con = duckdb.connect()
    event_log.load_served(con, own_world)
    rows = con.execute("SELECT count(*) FROM served_events WHERE user_id = 9").fetchone()
    assert rows == (1,)
    query = "SELECT count(*) AS logged_rows FROM served_events WHERE event_id = 'twice'"
    out = run_cli("sql", query, "--workspace", str(own_world.workspace))
    assert re.search(r"\b2\b", out), out  # the analysis view shows the log as written


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        ({"user_id": 1, "event_type": "click", "item_id": 10**9}, "events[0].item_id"),
        ({"user_id": 1, "event_type": "sku_cart", "sku_id": 10**9}, "events[0].sku_id"),
        (
            {"user_id": 1, "event_type": "click", "item_id": 5, "event_ts": 2**40},
            "events[0].event_ts",
        ),
    ],
)
def test_events_outside_the_catalog_or_after_the_clock_are_refused_naming_the_field(
    own_world: Settings, event: dict, needle: str
) -> None:
    segments = event_log.segments(own_world)
    with pytest.raises(DataContractError, match=re.escape(needle) + ".*Fix:"):
        intake_for(own_world).accept([BehaviourEvent(**event)])
    assert event_log.segments(own_world) == segments


def test_an_unwritable_log_acknowledges_nothing(own_world: Settings, tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    shutil.copytree(own_world.raw_dir, settings.raw_dir)
    log = EventLog(settings)
    event = {"user_id": 2, "event_type": "click", "item_id": 5, "event_id": "lost"}
    now = datetime.now(UTC)
    table = contract_rows([event], Catalog.load(settings), int(now.timestamp()), now)
    refused = pytest.raises(EventLogUnavailable, match=r"cannot be written.*Fix:")
    with unwritable(event_log.log_dir(settings)), refused, log.writing([2]):
        log.append(table)
    assert event_log.segments(settings) == []
    with log.writing([2]):
        assert log.append(table).new == [True]  # written once the folder is writable again
    assert len(event_log.segments(settings)) == 1
