"""Recall channels over real milvus-lite and DuckDB: planted neighbours, filters, merging."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from index.channels import (
    Candidate,
    RankedItems,
    RecallFilter,
    fallback_recall,
    multi_channel_recall,
    s2v,
    seed_item_vectors,
    u2v,
    v2v,
)
from index.collections import ContentIndex, build_content_index
from index.errors import DimensionMismatchError, InvalidContentError
from index.merge import merge_channels
from index.term_recall import TagIndex, milvus_term_recall
from mmrec.vocab import FRESH, MATERIALS, S2V, U2V, V2V
from tests.index_fixtures import PlantedCatalog, planted_catalog

warnings.filterwarnings("ignore", module="milvus_lite")


@pytest.fixture(scope="module")
def catalog() -> PlantedCatalog:
    return planted_catalog(n_items=3_000, dim=16, n_queries=20)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, catalog: PlantedCatalog) -> ContentIndex:
    uri = str(tmp_path_factory.mktemp("channels") / "milvus.db")
    build_content_index(uri, catalog.vectors, catalog.metadata, "1", show_progress=False)
    return ContentIndex(uri)


@pytest.fixture(scope="module")
def tags(index: ContentIndex) -> TagIndex:
    return TagIndex.from_index(index)


def material_of(catalog: PlantedCatalog) -> dict[int, str]:
    return dict(zip(catalog.metadata["item_id"], catalog.metadata["material"], strict=True))


@pytest.mark.parametrize("channel_fn, name", [(s2v, S2V), (v2v, V2V), (u2v, U2V)])
def test_vector_channel_finds_each_planted_neighbour_and_names_itself(
    index, catalog, channel_fn, name
):
    for query, planted in zip(catalog.queries, catalog.planted_ids, strict=True):
        found = channel_fn(index, query[None], limit=20)
        assert found[0] == Candidate(int(planted), pytest.approx(1.0, abs=1e-5), name)
        assert len(found) == 20
        assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)


def test_several_seeds_recall_the_union_of_their_neighbours_deduplicated(index, catalog):
    found = s2v(index, catalog.queries[:5], limit=50)
    ids = [c.item_id for c in found]
    assert set(catalog.planted_ids[:5]) <= set(ids)
    assert len(ids) == len(set(ids)) == 50


def test_one_search_for_several_channels_equals_one_search_per_channel(index, catalog):
    seen = RecallFilter(materials=("video", "shop"), exclude_ids=frozenset(catalog.planted_ids[:3]))
    asks = {
        U2V: (catalog.queries[:1], 40),
        V2V: (catalog.queries[1:4], 15),
        S2V: (catalog.queries[4:6], 7),
    }
    together = multi_channel_recall(index, asks, filters=seen)
    for channel, fn in ((U2V, u2v), (V2V, v2v), (S2V, s2v)):
        queries, limit = asks[channel]
        alone = fn(index, queries, limit=limit, filters=seen)
        assert [c.item_id for c in together[channel]] == [c.item_id for c in alone]
        assert len(alone) == limit
    assert multi_channel_recall(index, {U2V: (np.empty((0, 16)), 5)}) == {U2V: []}


def test_material_filter_keeps_only_those_materials(index, catalog):
    materials = material_of(catalog)
    keep = ("live", "shop")
    found = u2v(index, catalog.queries, limit=30, filters=RecallFilter(materials=keep))
    assert found and {materials[c.item_id] for c in found} <= set(keep)
    planted_kept = {int(p) for p in catalog.planted_ids if materials[int(p)] in keep}
    assert planted_kept <= {c.item_id for c in found}


def test_already_seen_items_are_never_recalled(index, catalog):
    seen = frozenset(int(i) for i in catalog.planted_ids)
    found = s2v(index, catalog.queries, limit=40, filters=RecallFilter(exclude_ids=seen))
    assert len(found) == 40 and not seen & {c.item_id for c in found}


def test_v2v_from_seed_item_ids_excluding_the_seeds(index, catalog):
    seeds = [int(i) for i in catalog.planted_ids[:3]] + [5]  # 5 is not in the index
    vectors = seed_item_vectors(index, seeds)
    assert vectors.shape == (3, 16)
    found = v2v(index, vectors, limit=10, filters=RecallFilter(exclude_ids=frozenset(seeds)))
    assert len(found) == 10 and not set(seeds) & {c.item_id for c in found}


def test_wrong_query_dimension_is_a_clear_error(index):
    with pytest.raises(DimensionMismatchError, match="dimension 8 but the index holds 16-d"):
        s2v(index, np.ones((2, 8), dtype=np.float32), limit=5)


@pytest.mark.parametrize("seeds", [np.empty((0, 16)), np.empty((0,)), []])
def test_no_seeds_give_an_empty_result(index, seeds):
    assert s2v(index, seeds, limit=10) == []


def test_limit_zero_or_no_material_gives_an_empty_result(index, catalog):
    assert u2v(index, catalog.queries, limit=0) == []
    assert u2v(index, catalog.queries, limit=5, filters=RecallFilter(materials=())) == []


@pytest.mark.parametrize("bad", [{"materials": ("podcast",)}, {"limit": -1}, {"limit": 10**6}])
def test_bad_filter_or_limit_is_a_clear_error(index, catalog, bad):
    with pytest.raises(InvalidContentError):
        s2v(
            index,
            catalog.queries[:1],
            limit=bad.get("limit", 5),
            filters=RecallFilter(materials=bad.get("materials")),
        )


def test_term_recall_ranks_items_with_more_shared_tags_first(tags, catalog):
    wanted = ["tag01", "tag02", "tag03"]
    found = tags.recall(wanted, limit=100)
    shared = {
        int(i): len(set(t) & set(wanted))
        for i, t in zip(catalog.metadata["item_id"], catalog.metadata["tags"], strict=True)
    }
    assert len(found) == 100
    assert [c.score for c in found] == [shared[c.item_id] for c in found]
    assert found[0].score == max(shared.values())
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)


def test_term_recall_in_duckdb_and_in_milvus_agree_under_filters(index, tags, catalog):
    filters = RecallFilter(
        materials=("video",), exclude_ids=frozenset(catalog.planted_ids.tolist())
    )
    duck = tags.recall(["tag05", "tag07"], limit=50, filters=filters)
    milvus = milvus_term_recall(index, ["tag05", "tag07"], limit=50, filters=filters)
    assert duck == milvus and len(duck) == 50
    materials = material_of(catalog)
    assert {materials[c.item_id] for c in duck} == {"video"}


@pytest.mark.parametrize("wanted", [[], None, ["no-such-tag"]])
def test_term_recall_without_matching_tags_is_empty(index, tags, wanted):
    assert tags.recall(wanted, limit=10) == []
    assert milvus_term_recall(index, wanted, limit=10) == []


def test_fresh_fallback_keeps_table_order_and_applies_filters(catalog):
    fresh = catalog.metadata.sort_values("publish_ts", ascending=False)
    newest = int(fresh["item_id"].iloc[0])
    found = fallback_recall(
        fresh,
        channel=FRESH,
        limit=5,
        filters=RecallFilter(materials=("video", "live"), exclude_ids=frozenset({newest})),
    )
    expected = fresh[fresh["material"].isin(["video", "live"]) & (fresh["item_id"] != newest)]
    assert [c.item_id for c in found] == expected["item_id"].head(5).tolist()
    assert all(c.channel == FRESH for c in found)


@given(
    n=st.integers(0, 60),
    limit=st.integers(0, 70),
    excluded=st.sets(st.integers(0, 80), max_size=30),
    materials=st.none() | st.lists(st.sampled_from(MATERIALS), max_size=3, unique=True),
    seed=st.integers(0, 1000),
)
def test_the_ranked_prefix_scan_equals_filtering_the_whole_table(
    n, limit, excluded, materials, seed
):
    rng = np.random.default_rng(seed)
    material_of = rng.choice([*MATERIALS, "other"], 80)  # one material per item
    ids = rng.integers(0, 80, n)  # repeats: an item keeps its first row
    table = pd.DataFrame({"item_id": ids, "material": material_of[ids]})
    filters = RecallFilter(
        materials=tuple(materials) if materials is not None else None,
        exclude_ids=frozenset(excluded),
    )
    got = fallback_recall(
        RankedItems.from_frame(table), channel=FRESH, limit=limit, filters=filters
    )
    # the reference: every row's score, filter the whole table, first row per item, head
    scored = table.assign(score=1.0 / (1.0 + np.arange(n)))
    kept = scored[filters.frame_mask(scored)].drop_duplicates("item_id").head(limit)
    assert [(c.item_id, c.score) for c in got] == list(zip(kept.item_id, kept.score, strict=True))


def test_fallback_without_the_needed_columns_is_a_clear_error():
    with pytest.raises(InvalidContentError, match="material"):
        fallback_recall(pd.DataFrame({"item_id": [1]}), channel=FRESH, limit=1)


def cands(channel: str, ids: list[int]) -> list[Candidate]:
    return [Candidate(i, 1.0 / (r + 1), channel) for r, i in enumerate(ids)]


def test_merge_applies_quotas_dedupes_and_keeps_every_finding_channel():
    results = {
        "s2v": cands("s2v", [1, 2, 3, 4]),
        "term": cands("term", [2, 5, 6]),
        "fresh": cands("fresh", [7]),
    }
    merged = merge_channels(results, {"s2v": 2, "term": 2}, total=None)
    assert [(m.item_id, m.channel) for m in merged] == [
        (1, "s2v"),
        (2, "s2v"),
        (5, "term"),
        (6, "term"),
    ]
    assert merged[1].found_by == ("s2v", "term")


def test_merge_fills_spare_slots_round_robin_from_leftovers():
    results = {
        "s2v": cands("s2v", [1, 2, 3]),
        "u2v": cands("u2v", [1, 4, 5]),
        "fresh": cands("fresh", [9]),
    }
    merged = merge_channels(results, {"s2v": 1, "u2v": 1}, total=5)
    assert [m.item_id for m in merged] == [1, 4, 2, 5, 9]
    assert merged[0].found_by == ("s2v", "u2v")


def test_negative_quota_is_a_clear_error():
    with pytest.raises(InvalidContentError, match="quotas"):
        merge_channels({}, {"s2v": -1})


channel_lists = st.dictionaries(
    st.sampled_from(["s2v", "v2v", "u2v", "term"]),
    st.lists(st.integers(0, 30), max_size=20, unique=True),
)


@given(
    channel_lists,
    st.dictionaries(st.sampled_from(["s2v", "v2v", "term"]), st.integers(0, 8)),
    st.none() | st.integers(0, 40),
)
def test_merge_output_is_unique_within_quotas_and_total(lists, quotas, total):
    results = {c: cands(c, ids) for c, ids in lists.items()}
    merged = merge_channels(results, quotas, total)
    ids = [m.item_id for m in merged]
    assert len(ids) == len(set(ids))
    if total is None:
        for channel, quota in quotas.items():
            assert sum(m.channel == channel for m in merged) <= quota
    else:
        assert len(ids) <= total
    for m in merged:
        assert m.channel in m.found_by and m.item_id in lists[m.channel]
