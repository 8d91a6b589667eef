"""The candidate feature reader returns exactly what Feast's get_online_features returns for
the same (user, item, request) rows, on SQLite and Redis, unknown ids included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrec.feast_store import open_store, world_end
from mmrec.settings import Settings
from serving.online_features import CandidateFeatureReader, OnlineFeatureError


def _assert_reader_matches_feast(settings: Settings) -> None:
    store = open_store(settings)
    catalog = pd.read_parquet(settings.offline_dir / "item_attributes", columns=["item_id"]).item_id
    reader = CandidateFeatureReader(store, "ranking", catalog)
    now = {"request_ts": int(world_end(settings).timestamp())}
    rng = np.random.default_rng(0)
    for user in (3, 17, 10**9):  # the last one is unknown
        candidates = [*rng.choice(catalog, 60, replace=False).tolist(), 10**9]
        got = reader.read(user, candidates, now)
        want = store.get_online_features(
            features=store.get_feature_service("ranking"),
            entity_rows=[{"user_id": user, "item_id": i, **now} for i in candidates],
        ).to_dict()
        assert set(got) == set(want)
        for name in want:
            assert got[name] == want[name], name


def test_reader_equals_feast_online_reads_on_sqlite(tiny_world: Settings) -> None:
    _assert_reader_matches_feast(tiny_world)


@pytest.mark.redis
def test_reader_equals_feast_online_reads_on_redis(redis_world: Settings) -> None:
    _assert_reader_matches_feast(redis_world)


def test_reader_rejects_unknown_service_and_missing_request_fields(feature_store) -> None:
    with pytest.raises(OnlineFeatureError, match="unknown feature service"):
        CandidateFeatureReader(feature_store, "nope", [1, 2])
    reader = CandidateFeatureReader(feature_store, "ranking", [1, 2])
    with pytest.raises(OnlineFeatureError, match="request_ts"):
        reader.read(1, [1, 2])
