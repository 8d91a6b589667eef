"""The item snapshot written once per snapshot version and read back by every other reader.

A reader with `SnapshotFiles` reads the online store and runs its persisted hooks only when no
file holds the current version; another reader (another worker) maps the files instead, and
reads the same feature values as a reader of the online store itself.
"""

from __future__ import annotations

import numpy as np

from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from models.recall_inputs import catalog_ids
from serving.online_features import CandidateFeatureReader
from serving.snapshot_files import ItemColumns, Persisted, SnapshotFiles

SERVICE = "ranking_v1"


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(np.asarray(a), np.asarray(b))
    return a == b or (a != a and b != b)  # NaN == NaN here


def _reader(store, ids, files, derived_calls: list[int]) -> CandidateFeatureReader:
    reader = CandidateFeatureReader(store, SERVICE, ids, files=files)

    def derive(snapshot) -> dict[str, np.ndarray]:
        derived_calls.append(1)
        return {"clicks": np.nan_to_num(snapshot.column("clicks_7d").astype(float))}

    reader.on_load("derived", derive, persisted=Persisted(lambda d: d, dict))
    return reader


def test_a_second_reader_maps_the_files_and_reads_what_the_online_store_has(
    tiny_world: Settings, feature_store, tmp_path
) -> None:
    ids = catalog_ids(tiny_world)
    files = SnapshotFiles(tmp_path / "snapshots", depends_on="test-model")
    calls: list[int] = []
    first = _reader(feature_store, ids, files, calls).snapshot()
    second_reader = _reader(feature_store, ids, files, calls)
    second = second_reader.snapshot()
    assert len(calls) == 1  # derived once, for the version's files
    assert first.key == second.key is not None
    assert isinstance(second.derived["derived"]["clicks"], np.memmap)
    np.testing.assert_array_equal(
        first.derived["derived"]["clicks"], second.derived["derived"]["clicks"]
    )

    online = CandidateFeatureReader(feature_store, SERVICE, ids)  # no files: the online store
    assert set(online.snapshot().columns) == set(second.columns)
    for name, column in online.snapshot().columns.items():
        bad = [
            i
            for i, (a, b) in enumerate(zip(column, second.columns[name], strict=True))
            if not _same(a, b)
        ]
        assert not bad, f"{name}: rows {bad[:3]} differ"
    request = {"request_ts": int(world_end(tiny_world).timestamp())}
    some = [int(i) for i in ids[:40]] + [10**9]  # and an unknown item
    want = online.read(3, some, request=request)
    got = second_reader.read(3, some, request=request)
    assert set(got) == set(want)
    for name in want:
        assert all(_same(a, b) for a, b in zip(got[name], want[name], strict=True)), name


def test_a_reload_with_nothing_materialized_reads_nothing(
    tiny_world: Settings, feature_store, tmp_path
) -> None:
    ids = catalog_ids(tiny_world)
    files = SnapshotFiles(tmp_path / "snapshots", depends_on="test-model")
    calls: list[int] = []
    reader = _reader(feature_store, ids, files, calls)
    reader.refresh_seconds = 0.0
    first = reader.snapshot()
    reader.snapshot()  # stale at once: a background reload
    reader.wait_for_reload(timeout=120)
    again = reader.snapshot()
    reader.wait_for_reload(timeout=120)
    assert again.key == first.key and again.columns is first.columns
    assert len(calls) == 1


def test_another_model_gets_its_own_version(tiny_world: Settings, feature_store, tmp_path) -> None:
    ids = catalog_ids(tiny_world)
    root = tmp_path / "snapshots"
    keys = {
        SnapshotFiles(root, depends_on=model).key(
            feature_store, CandidateFeatureReader(feature_store, SERVICE, ids)._item_views(), ids
        )
        for model in ("ranking:a", "ranking:b")
    }
    assert len(keys) == 2 and None not in keys


def test_a_new_version_that_cannot_be_read_keeps_the_previous_snapshot(
    tiny_world: Settings, feature_store, tmp_path, monkeypatch
) -> None:
    """Something was materialized (a new version) but the online store fails while the
    reload reads it: the reader keeps serving the version it has, and writes no files."""
    import redis.exceptions

    ids = catalog_ids(tiny_world)
    files = SnapshotFiles(tmp_path / "snapshots", depends_on="test-model")
    reader = _reader(feature_store, ids, files, [])
    first = reader.snapshot()
    monkeypatch.setattr(files, "key", lambda *args: "a-newer-version")

    def down(version):
        raise redis.exceptions.ConnectionError("the online store is down")

    monkeypatch.setattr(reader, "_read_online", down)
    reader.refresh_seconds = 0.0
    reader.snapshot()  # stale: a reload that fails
    reader.wait_for_reload(timeout=120)
    kept = reader.snapshot()
    assert kept.key == first.key and kept.columns is first.columns
    assert not (tmp_path / "snapshots" / "a-newer-version").exists()


def test_item_columns_decode_a_requests_rows_as_the_whole_column_has_them() -> None:
    """A request's rows (`rows`) equal the same rows of the whole decoded column, for every
    kind of column and null (a column without any value too: the returning-users world has
    one), and a position past the last item reads None."""
    columns = ItemColumns.from_values(
        {
            "clicks": [3, None, 5, 0],
            "ctr": [0.5, 0.25, None, 1.0],
            "publish_ts": [10, 20, 30, 40],
            "material": ["video", None, "live", "shop"],
            "tags": [["a", "b"], [], None, ["c"]],
            "emb": [np.array([1, 2], np.float32), None, np.array([3, 4], np.float32), None],
            "skus": [[7, 8, 9], [], None, [4]],
            "probs": [None, None, None, None],  # a numeric list no item has (Arrow's null type)
        },
        arrays={"emb": np.float32, "skus": np.int64, "probs": np.float32},
    )
    positions = np.array([2, 0, 4, 1, 2, 3])  # 4: an unknown item (the trailing row)
    got = columns.rows(positions)
    assert set(got) == set(columns)
    for name in columns:
        whole = columns[name]
        assert len(whole) == 5 and whole[-1] is None
        want = whole[positions]
        assert all(_same(a, b) for a, b in zip(got[name], want, strict=True)), name
    assert got["emb"][0].dtype == np.float32 and got["emb"][2] is None
    assert got["publish_ts"] == [30, 10, None, 20, 30, 40]
    assert got["tags"] == [None, ["a", "b"], None, [], None, ["c"]]
    assert [None if v is None else v.tolist() for v in got["skus"]] == [
        None, [7, 8, 9], None, [], None, [4],
    ]  # fmt: skip
    assert got["probs"] == [None] * 6
    columns.drop(["emb", "skus", "probs", "missing"])
    assert list(columns) == ["clicks", "ctr", "publish_ts", "material", "tags"]
