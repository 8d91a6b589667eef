"""Content-vector collections on real milvus-lite: build, versioned swap, upsert, delete, errors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from index.collections import ContentIndex, build_content_index, list_versions
from index.connection import connect
from index.errors import (
    DimensionMismatchError,
    IndexConnectionError,
    InvalidContentError,
    UnknownCollectionError,
    VersionInUseError,
)
from index.schema import IndexSpec, content_schema
from tests.index_fixtures import PlantedCatalog, planted_catalog

warnings.filterwarnings("ignore", module="milvus_lite")


@pytest.fixture(scope="module")
def catalog() -> PlantedCatalog:
    return planted_catalog(n_items=3_000, dim=16, n_queries=20)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, catalog: PlantedCatalog) -> ContentIndex:
    """One milvus-lite file with version 'a' of the catalog active (read-only for tests)."""
    uri = str(tmp_path_factory.mktemp("collections") / "milvus.db")
    build_content_index(uri, catalog.vectors, catalog.metadata, "a", show_progress=False)
    return ContentIndex(uri)


def top_ids(index: ContentIndex, queries: np.ndarray, limit: int = 10) -> list[list[int]]:
    return [[hit["id"] for hit in hits] for hits in index.search(queries, limit)]


def test_build_then_search_ranks_each_planted_neighbour_first(built, catalog):
    hits = top_ids(built, catalog.queries)
    assert [h[0] for h in hits] == catalog.planted_ids.tolist()
    assert all(len(h) == 10 for h in hits)


def test_build_writes_every_row_with_its_metadata_and_embedding_version(built, catalog):
    assert built.count() == len(catalog.metadata)
    assert built.collection == "content_vectors_va"
    item = int(catalog.metadata["item_id"].iloc[7])
    row = built.client.get(built.collection, ids=[item], output_fields=["*"])[0]
    expected = catalog.metadata.iloc[7]
    assert row["material"] == expected["material"]
    assert list(row["tags"]) == expected["tags"]
    assert row["publish_ts"] == expected["publish_ts"]
    assert row["embedding_version"] == "a"
    np.testing.assert_allclose(row["vector"], catalog.vectors[7], rtol=1e-6)


def test_rebuild_swaps_alias_and_drops_versions_beyond_keep(tmp_path: Path, catalog):
    client = connect(str(tmp_path / "milvus.db"))
    for version in ("1", "2", "3"):
        report = build_content_index(
            client, catalog.vectors, catalog.metadata, version, keep=2, show_progress=False
        )
    assert report.collection == "content_vectors_v3"
    assert report.dropped == ("content_vectors_v1",)
    listed = [(r.collection, active) for r, active in list_versions(client)]
    assert listed == [("content_vectors_v3", True), ("content_vectors_v2", False)]
    assert not client.has_collection("content_vectors_v1")
    assert ContentIndex(client).collection == "content_vectors_v3"


def test_building_the_active_version_again_is_refused(built, catalog):
    with pytest.raises(VersionInUseError, match="new version"):
        build_content_index(
            built.client, catalog.vectors, catalog.metadata, "a", show_progress=False
        )


def test_leftover_of_an_unfinished_build_is_replaced_not_served(tmp_path: Path, catalog):
    client = connect(str(tmp_path / "milvus.db"))
    client.create_collection("content_vectors_vb", schema=content_schema(16))  # crashed build
    with pytest.raises(UnknownCollectionError):
        ContentIndex(client).record()
    build_content_index(client, catalog.vectors, catalog.metadata, "b", show_progress=False)
    assert ContentIndex(client).count() == len(catalog.metadata)


def test_upsert_adds_a_cold_start_item_that_search_finds_then_delete_retires_it(
    tmp_path: Path, catalog
):
    index = ContentIndex(str(tmp_path / "milvus.db"))
    build_content_index(index.client, catalog.vectors, catalog.metadata, "c", show_progress=False)
    new_vector = -catalog.queries[:1]  # far from every planted item, nearest to its own query
    new_item = catalog.metadata.iloc[:1].assign(item_id=[99_999], tags=[["new"]])
    assert index.upsert(new_vector, new_item) == 1
    assert top_ids(index, new_vector, 1) == [[99_999]]
    assert index.count() == len(catalog.metadata) + 1
    retired = [99_999, int(catalog.planted_ids[0])]
    assert index.delete(retired) == 2
    assert index.count() == len(catalog.metadata) - 1
    assert not set(top_ids(index, np.vstack([new_vector, catalog.queries[:1]]))[0]) & set(retired)
    assert index.delete([]) == 0


def test_upsert_of_vectors_with_another_dimension_is_a_clear_error(built, catalog):
    with pytest.raises(DimensionMismatchError, match=r"dimension 8 .* 16-d"):
        built.upsert(np.ones((1, 8), dtype=np.float32), catalog.metadata.iloc[:1])


def _bad(meta: pd.DataFrame, vectors: np.ndarray, case: str) -> tuple[np.ndarray, pd.DataFrame]:
    if case == "row count":
        return vectors, meta.iloc[:-1]
    if case == "unique":
        return vectors, meta.assign(item_id=0)
    if case == "unknown material":
        return vectors, meta.assign(material="podcast")
    if case == "missing columns":
        return vectors, meta.drop(columns=["tags"])
    if case == "NaN":
        out = vectors.copy()
        out[3, 2] = np.nan
        return out, meta
    if case == "(N, d)":
        return vectors[0], meta
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["row count", "unique", "unknown material", "missing columns", "NaN", "(N, d)"]
)
def test_malformed_build_input_is_rejected_with_a_message_saying_what(
    tmp_path: Path, catalog, case
):
    vectors, meta = _bad(catalog.metadata.head(50), catalog.vectors[:50], case)
    with pytest.raises(InvalidContentError, match=re.escape(case.split()[0])):
        build_content_index(str(tmp_path / "m.db"), vectors, meta, "x", show_progress=False)


def test_publish_time_as_datetime_is_stored_as_epoch_seconds(tmp_path: Path, catalog):
    meta = catalog.metadata.head(10).copy()
    meta["publish_ts"] = pd.to_datetime(meta["publish_ts"], unit="s", utc=True)
    index = ContentIndex(str(tmp_path / "m.db"))
    build_content_index(index.client, catalog.vectors[:10], meta, "t", show_progress=False)
    rows = index.client.query(index.collection, filter="", output_fields=["publish_ts"], limit=10)
    assert sorted(r["publish_ts"] for r in rows) == catalog.metadata["publish_ts"].head(10).tolist()


@pytest.mark.parametrize("version", ["", "v-1", "x" * 49, "a b"])
def test_bad_version_names_are_rejected(built, catalog, version):
    with pytest.raises(InvalidContentError, match="embedding version"):
        build_content_index(
            built.client, catalog.vectors, catalog.metadata, version, show_progress=False
        )


def test_unknown_alias_is_a_clear_error_that_says_to_build(built):
    with pytest.raises(UnknownCollectionError, match="build one first"):
        ContentIndex(built.client, alias="no_such_index").record()


@pytest.mark.parametrize("uri", ["", "vectors.txt", "/tmp/" + "x" * 40 + ".db"])
def test_malformed_uri_is_a_clear_connection_error(uri):
    with pytest.raises(IndexConnectionError):
        connect(uri)


def test_index_spec_is_exact_flat_up_to_300k_rows_and_ivf_beyond():
    assert IndexSpec.for_rows(100_000) == IndexSpec("FLAT")
    big = IndexSpec.for_rows(1_000_000)
    assert (big.index_type, big.params, big.search_params) == (
        "IVF_FLAT",
        {"nlist": 4096},
        {"nprobe": 16},
    )
    assert IndexSpec.from_json(big.to_json()) == big
