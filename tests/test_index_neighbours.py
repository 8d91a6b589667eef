"""Neighbour lists (index/neighbours.py) on a planted catalog in milvus-lite (exact FLAT).

A list is the `top_n` best hits of a query, unfiltered; a request applies its filters to it.
Query rows answered from lists, mixed with rows searched live in the same call, give what
searching every row live (filters in Milvus) gives, item for item and score for score; a row
whose filtered list runs short is searched live instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from index.channels import RecallFilter, multi_channel_recall
from index.collections import ContentIndex, build_content_index
from index.neighbours import NeighbourLists, NeighbourTable, prune, search_table
from mmrec.vocab import MATERIALS, S2V, U2V, V2V
from tests.index_fixtures import PlantedCatalog, planted_catalog

warnings.filterwarnings("ignore", module="milvus_lite")
TOP_N = 60


@pytest.fixture(scope="module")
def catalog() -> PlantedCatalog:
    return planted_catalog(n_items=3_000, dim=16, n_queries=40)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, catalog: PlantedCatalog) -> ContentIndex:
    uri = str(tmp_path_factory.mktemp("neighbours") / "milvus.db")
    build_content_index(uri, catalog.vectors, catalog.metadata, "1", show_progress=False)
    return ContentIndex(uri)


@pytest.fixture(scope="module")
def table(index: ContentIndex, catalog: PlantedCatalog) -> NeighbourTable:
    ids = catalog.metadata["item_id"].to_numpy(np.int64)
    codes = catalog.metadata["material"].map(MATERIALS.index).to_numpy(np.int64)
    keys = ids[:40][::-1].copy()  # given unsorted: the table sorts them
    return search_table(
        index, keys, np.full(40, -1), catalog.vectors[:40][::-1], TOP_N, ids, codes, "test"
    )


def test_a_table_is_each_keys_unfiltered_top_n_best_first(table, index, catalog) -> None:
    assert (np.diff(table.keys) > 0).all() and table.top_n == TOP_N
    row = int(table.rows(np.asarray([catalog.metadata.item_id[7]]))[0])
    live = index.search(table.queries[row][None], TOP_N)[0]
    assert table.ids[row].tolist() == list(live.ids)
    assert table.scores[row].tolist() == list(np.float32(live.distances))
    assert table.rows(np.asarray([10**9]))[0] == -1
    assert table.rows(table.keys[:1], np.asarray([3]))[0] == -1  # made from another tag


@pytest.mark.parametrize(
    "filters",
    [
        RecallFilter(),
        RecallFilter(exclude_ids=frozenset(range(1000, 1030))),
        RecallFilter(materials=("video", "live"), exclude_ids=frozenset({1001, 1002})),
        RecallFilter(materials=("shop",)),  # narrow: most lists run short
    ],
    ids=["none", "seen", "materials", "narrow"],
)
def test_rows_from_lists_answer_as_the_live_search(table, index, filters) -> None:
    limit = 20
    rows = [int(r) for r in table.rows(table.keys[:8])]
    listed = [table.hits(r, limit, _excluded(filters), _codes(filters)) for r in rows]
    mixed = [
        table.queries[r] if hits is None else hits for r, hits in zip(rows, listed, strict=True)
    ]
    user = table.queries[20][None]  # a U2V-like row always searched live
    queries = {U2V: (list(user), 30), V2V: (mixed, limit)}
    live = {U2V: (user, 30), V2V: (table.queries[rows], limit)}
    got = multi_channel_recall(index, queries, filters=filters)
    want = multi_channel_recall(index, live, filters=filters)
    for channel in (U2V, V2V):
        assert [(c.item_id, c.score) for c in got[channel]] == [
            (c.item_id, c.score) for c in want[channel]
        ], channel
    if filters.materials == ("shop",):
        assert any(hits is None for hits in listed)  # short after the filter: searched live
    else:
        assert all(hits is not None for hits in listed)


def test_a_complete_list_is_never_short(table) -> None:
    complete = NeighbourTable(
        table.keys[:1], table.tags[:1], np.asarray([[5, 6, -1]]), np.asarray([[0.9, 0.8, 0.0]]),
        np.asarray([[0, 0, -1]], np.int8), table.queries[:1],
    )  # fmt: skip
    assert complete.hits(0, 10, np.asarray([6]), None) == [(5, pytest.approx(0.9))]


def test_lists_are_saved_complete_and_pruned_with_their_build(table, tmp_path) -> None:
    lists = NeighbourLists("content_vectors_v1_123", {V2V: table, S2V: table})
    lists.save(tmp_path)
    loaded = NeighbourLists.load(tmp_path, "content_vectors_v1_123")
    assert loaded is not None and set(loaded.tables) == {V2V, S2V}
    for name in ("keys", "ids", "scores", "materials", "queries"):
        np.testing.assert_array_equal(getattr(loaded.tables[V2V], name), getattr(table, name))
    assert NeighbourLists.load(tmp_path, "content_vectors_v2_456") is None
    assert prune(tmp_path, keep=["content_vectors_v2_456"]) == ["content_vectors_v1_123"]
    assert NeighbourLists.load(tmp_path, "content_vectors_v1_123") is None


def _excluded(filters: RecallFilter) -> np.ndarray:
    return np.asarray(sorted(filters.exclude_ids), np.int64)


def _codes(filters: RecallFilter) -> np.ndarray | None:
    if filters.materials is None:
        return None
    return np.asarray([MATERIALS.index(m) for m in filters.materials], np.int64)


def test_a_build_on_one_engine_keeps_the_other_engines_lists(table, tmp_path) -> None:
    """A workspace's milvus-lite file and a Milvus server each prune only their own builds'
    lists (a build on the server used to remove the lite index's, so it searched live)."""
    NeighbourLists("content_vectors_v1_lite", {V2V: table}).save(tmp_path, "lite")
    NeighbourLists("content_vectors_v1_server", {V2V: table}).save(tmp_path, "server")
    assert prune(tmp_path, keep=["content_vectors_v1_server"], engine="server") == []
    assert NeighbourLists.load(tmp_path, "content_vectors_v1_lite") is not None
    assert prune(tmp_path, keep=[], engine="lite") == ["content_vectors_v1_lite"]
    assert NeighbourLists.load(tmp_path, "content_vectors_v1_server") is not None
