"""The candidate feature reader returns exactly what Feast's get_online_features returns for
the same (user, item, request) rows, on SQLite and Redis, unknown ids included."""

from __future__ import annotations

import sqlite3
import threading
import weakref

import numpy as np
import pandas as pd
import pytest

from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from serving import online_features
from serving.online_features import CandidateFeatureReader, OnlineFeatureError
from tests.analysis_fixtures import copy_world


def _assert_reader_matches_feast(settings: Settings) -> None:
    store = open_store(settings)
    catalog = pd.read_parquet(settings.offline_dir / "item_attributes", columns=["item_id"]).item_id
    reader = CandidateFeatureReader(store, "ranking_v1", catalog)
    now = {"request_ts": int(world_end(settings).timestamp())}
    rng = np.random.default_rng(0)
    for user in (3, 17, 10**9):  # the last one is unknown
        candidates = [*rng.choice(catalog, 60, replace=False).tolist(), 10**9]
        got = reader.read(user, candidates, now)
        want = store.get_online_features(
            features=store.get_feature_service("ranking_v1"),
            entity_rows=[{"user_id": user, "item_id": i, **now} for i in candidates],
        ).to_dict()
        assert set(got) == set(want)
        for name in want:  # numeric lists come as numpy arrays of the same values
            plain = [v.tolist() if isinstance(v, np.ndarray) else v for v in got[name]]
            assert plain == want[name], name
        vector = next(v for v in got["text_emb"] if v is not None)
        assert isinstance(vector, np.ndarray) and vector.dtype == np.float32


def test_reader_equals_feast_online_reads_on_sqlite(tiny_world: Settings) -> None:
    _assert_reader_matches_feast(tiny_world)


@pytest.mark.redis
def test_reader_equals_feast_online_reads_on_redis(redis_world: Settings) -> None:
    _assert_reader_matches_feast(redis_world)


def test_reader_rejects_unknown_service_and_missing_request_fields(feature_store) -> None:
    with pytest.raises(OnlineFeatureError, match="unknown feature service"):
        CandidateFeatureReader(feature_store, "nope", [1, 2])
    reader = CandidateFeatureReader(feature_store, "ranking_v1", [1, 2])
    with pytest.raises(OnlineFeatureError, match="request_ts"):
        reader.read(1, [1, 2])


def _catalog(settings: Settings) -> np.ndarray:
    return pd.read_parquet(
        settings.offline_dir / "item_attributes", columns=["item_id"]
    ).item_id.to_numpy()


def test_a_stale_snapshot_reloads_in_the_background(tiny_world: Settings, feature_store) -> None:
    reader = CandidateFeatureReader(
        feature_store, "ranking_v1", _catalog(tiny_world), refresh_seconds=0.0
    )
    loads: list[int] = []
    reader.on_load("loads", lambda snapshot: loads.append(snapshot.version) or len(loads))
    first = reader.snapshot()
    assert first.version == 1 and first.derived == {"loads": 1}
    # stale at once: the call answers with the current snapshot and starts a reload
    assert reader.snapshot() is first
    reader.wait_for_reload(timeout=120)
    second = reader.snapshot()
    reader.wait_for_reload(timeout=120)  # that call may have started the next reload
    assert second.version == 2 and second.derived == {"loads": 2} and loads[:2] == [1, 2]
    assert set(second.columns) == set(first.columns)
    for name in ("clicks_7d", "category", "text_emb"):
        assert list(map(str, second.column(name))) == list(map(str, first.column(name)))


def test_a_pinned_snapshot_answers_until_the_pin_ends_while_a_reload_swaps_in_the_next(
    tiny_world: Settings, feature_store
) -> None:
    """One request's reads come from one version: inside `pinned()` a reload that finished
    meanwhile is not seen there, while another thread (another request) sees it."""
    reader = CandidateFeatureReader(
        feature_store, "ranking_v1", _catalog(tiny_world), refresh_seconds=0.0
    )
    items = _catalog(tiny_world)[:3].tolist()
    now = {"request_ts": int(world_end(tiny_world).timestamp())}
    first = reader.snapshot()
    with reader.pinned() as pinned:
        assert pinned is first
        reader.wait_for_reload(timeout=120)  # the pin's own snapshot() call started one
        elsewhere: list = []
        thread = threading.Thread(target=lambda: elsewhere.append(reader.snapshot()))
        thread.start()
        thread.join()
        assert elsewhere[0].version == 2
        assert reader.snapshot() is first and reader.snapshot_name == "1"
        assert reader.read(1, items, now)["clicks_7d"] is not None
    reader.wait_for_reload(timeout=120)  # the one the other thread's call started: none left
    assert reader.snapshot_version >= 2 and reader.snapshot_name != "1"


def test_a_reload_returns_memory_once_the_old_snapshot_is_freed(
    tiny_world: Settings, feature_store, monkeypatch
) -> None:
    online_features.release_free_heap()  # glibc's malloc_trim here; runs without error
    reader = CandidateFeatureReader(
        feature_store, "ranking_v1", _catalog(tiny_world), refresh_seconds=0.0
    )
    old = weakref.ref(reader.snapshot())
    freed_at_release: list[bool] = []
    monkeypatch.setattr(
        online_features, "release_free_heap", lambda: freed_at_release.append(old() is None)
    )
    reader.snapshot()  # stale: starts a reload
    reader.wait_for_reload(timeout=120)
    assert reader.snapshot_version == 2 and freed_at_release == [True]


def test_a_failed_reload_keeps_serving_the_last_snapshot(tiny_world: Settings, tmp_path) -> None:
    broken = copy_world(tiny_world, tmp_path / "ws")
    store = open_store(broken)
    reader = CandidateFeatureReader(store, "ranking_v1", _catalog(broken), refresh_seconds=0.0)
    now = {"request_ts": int(world_end(broken).timestamp())}
    items = _catalog(broken)[:5].tolist()
    before = reader.read(3, items, now)
    with sqlite3.connect(broken.data_dir / "feast" / "online_store.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            if "item" in table:
                db.execute(f'DROP TABLE "{table}"')
    first = reader.snapshot()  # starts a reload that fails
    reader.wait_for_reload(timeout=120)
    after = reader.snapshot()
    reader.wait_for_reload(timeout=120)
    assert after.version == first.version == 1 and after.loaded_at > first.loaded_at
    assert reader.read(3, items, now)["clicks_7d"] == before["clicks_7d"]
    reader.wait_for_reload(timeout=120)
