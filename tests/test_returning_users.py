"""Real logs served right (issue #28): on a long sparse log, a shopper whose last click was
months before the data's end is served from their own history, and an item nobody touched for
months can still be recalled and ranked. Long-term features (behaviour sequences, cross-domain
interest, item content) never expire; windowed statistics keep their window."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from datagen.long_log import LongLogShape, write_long_log
from feature_pipelines.user_sequences import SEQ_LENGTH
from index.server import LiteServer
from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from serving.schemas import RecommendRequest
from tests.conftest import make_workspace, run_cli

pytestmark = pytest.mark.slow
IDLE = pd.Timedelta(days=90)


@pytest.fixture(scope="module")
def long_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A 4-year sparse log imported and run through every stage; its index served over a URI."""
    root = tmp_path_factory.mktemp("returning")
    shape = LongLogShape(users=40, items=300, events=6_000, active_days=300, years=4)
    events, items = write_long_log(root / "contract", shape, seed=5)
    settings = make_workspace(root / "ws")
    ws = str(settings.workspace)
    run_cli("data", "import", "--events", str(events), "--items", str(items), "-w", ws)
    with (
        LiteServer(settings.data_dir / "index" / "milvus.db") as lite,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("MMREC_MILVUS_URI", lite.uri)
        env.setenv("MMREC_TORCH_THREADS", "1")
        run_cli("run", "-w", ws)
        yield settings, lite.uri


@pytest.fixture(scope="module")
def pipeline(long_world: tuple[Settings, str]):
    from serving.pipeline import RecommendationPipeline

    settings, uri = long_world
    return RecommendationPipeline(settings, milvus_uri=uri)


def _events(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(settings.raw_dir / "events")


def test_a_user_idle_for_months_is_served_from_their_own_history(
    long_world: tuple[Settings, str], pipeline
) -> None:
    settings, _ = long_world
    end = world_end(settings)
    clicks = _events(settings).query("event_type == 'click'")
    last_click = clicks.groupby("user_id").event_timestamp.max()
    idle = last_click[last_click < end - IDLE]
    assert len(idle) > 0, "the log has users idle for months"
    user = int(idle.index[0])
    answer = pipeline.recommend(RecommendRequest(user_id=user, scene="home", k=10)).response
    assert answer.cold_start is False and answer.degraded == []
    assert len(answer.items) == 10
    found_by = {channel for item in answer.items for channel in item.found_by}
    assert {"u2v", "v2v"} & found_by  # recalled from their history, not only the fallbacks
    # already seen: filtered, as far as the click sequence reaches (its newest SEQ_LENGTH
    # clicks; this user has more, and an item clicked only before them may be served again)
    mine = clicks[clicks.user_id == user].sort_values("event_timestamp", kind="stable")
    assert len(mine) > SEQ_LENGTH
    newest = set(mine.item_id.iloc[-SEQ_LENGTH:])
    assert not newest & {item.item_id for item in answer.items}


def test_an_item_untouched_for_months_can_be_recalled_and_ranked(
    long_world: tuple[Settings, str], pipeline
) -> None:
    settings, _ = long_world
    end = world_end(settings)
    last_event = _events(settings).groupby("item_id").event_timestamp.max()
    old = last_event[last_event < end - IDLE]
    assert len(old) > 0
    item = int(old.index[0])
    vector = pipeline.index.get_vectors([item])[item]
    hits = pipeline.index.search(np.stack([vector]), limit=5)[0]
    assert item in [hit["id"] for hit in hits]  # in the index, found by its vector
    user = int(_events(settings).user_id.iloc[0])
    content = pipeline.store.get_online_features(
        features=["item_embeddings:text_emb", "item_tags:category_tags"],
        entity_rows=[{"item_id": item}],
    ).to_dict()
    assert content["text_emb"][0] is not None and content["category_tags"][0]  # online
    features = pipeline.reader.read(user, [item], request={"request_ts": pipeline.now()})
    assert features["material"][0] is not None
    ranked = pipeline.ranker.rank(features, "home")
    assert list(ranked.item_ids) == [item]
    assert np.isfinite(ranked.task_probs["click"]).all()


def test_the_default_split_holds_the_stated_share_of_a_long_log(
    long_world: tuple[Settings, str],
) -> None:
    """`mmrec run`'s default split: the newest days holding >= 10% of the events test, the
    days before them holding >= 10% valid, each the fewest days that do (not 2 and 1 days,
    which hold almost nothing of a log with years of sparse days)."""
    settings, _ = long_world
    manifest = json.loads((settings.training_set_dir("ranking_v1") / "manifest.json").read_text())
    per_day = _events(settings).event_timestamp.dt.strftime("%Y-%m-%d").value_counts()
    total = per_day.sum()
    for split in ("test", "valid"):
        days = manifest["days"][split]
        share = per_day[days].sum() / total
        assert share >= 0.1, (split, share)
        assert per_day[days[1:]].sum() / total < 0.1  # the fewest days that hold it
    assert len(manifest["days"]["train"]) > len(manifest["days"]["test"])
