"""`mmrec index build`: the trained item tower over Feast's item features, in a new collection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from index.build import load_recall_model
from index.collections import ContentIndex
from index.server import LiteServer
from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from models.recall import encode_items
from models.recall_inputs import UNKNOWN_ITEM_ID, catalog_ids, load_item_table
from models.recall_vectors import load_item_vectors


@pytest.fixture(scope="module")
def built(trained_world: Settings, index_server: LiteServer, feature_store):
    recall = load_recall_model(trained_world, trained_world.extra["recall"])
    table = load_item_table(feature_store, catalog_ids(trained_world), world_end(trained_world))
    return recall, table, ContentIndex(index_server.uri)


def test_the_index_holds_every_published_item_under_the_model_version(built) -> None:
    recall, table, index = built
    assert index.collection == f"content_vectors_v{recall.version}"
    assert index.count() == len(table) > 0
    assert index.dim == recall.model.config.out_dim
    rows = index.scan(["material", "category", "tags", "embedding_version"])
    assert set(rows.item_id) == set(table.item_id.tolist())
    assert set(rows.embedding_version) == {recall.version}
    by_id = rows.set_index("item_id")
    attrs = table.attributes.set_index("item_id")
    assert (by_id.material == attrs.material.loc[by_id.index]).all()
    assert all(len(tags) > 0 for tags in rows.tags)


def test_stored_vectors_are_the_item_tower_with_unknown_ids_for_items_it_never_learned(
    built,
) -> None:
    recall, table, index = built
    known = np.isin(table.item_id, recall.known_item_ids)
    assert known.any() and (~known).any()  # the tiny world has both warm and cold items
    rows = np.concatenate([np.flatnonzero(known)[:3], np.flatnonzero(~known)[:3]])
    stored = index.get_vectors(table.item_id[rows])
    inputs = table.inputs(rows)
    inputs.item_id = torch.from_numpy(
        np.where(known[rows], table.item_id[rows], UNKNOWN_ITEM_ID).astype(np.int64)
    )
    expected = encode_items(recall.model, inputs).numpy()
    for i, row in enumerate(rows):
        np.testing.assert_allclose(stored[int(table.item_id[row])], expected[i], atol=1e-5)


def test_the_rankers_recall_vectors_are_the_ones_the_index_holds(
    trained_world: Settings, feature_store, built
) -> None:
    """The shared encoder's input (RankingConfig.use_recall_vector) reads, for every item,
    the vector the index holds for the recall model it records."""
    recall, table, index = built
    vectors = load_item_vectors(trained_world, feature_store, recall.tag)
    assert vectors.model_tag == recall.tag and vectors.dim == index.dim
    ids = table.item_id
    stored = index.get_vectors(ids)
    got = vectors.of(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(got, np.stack([stored[int(i)] for i in ids]), atol=1e-6)
    assert not vectors.of(torch.tensor([-5])).any()  # an id outside the catalog: zeros


def test_an_item_vector_finds_its_own_item_first(built) -> None:
    _, table, index = built
    ids = table.item_id[:5]
    vectors = index.get_vectors(ids)
    hits = index.search(np.stack([vectors[int(i)] for i in ids]), limit=3)
    assert [int(h[0]["id"]) for h in hits] == [int(i) for i in ids]


def test_rebuilding_from_the_same_model_is_refused_and_the_index_stays(
    trained_world: Settings, index_server: LiteServer, built
) -> None:
    _, table, index = built
    ws = str(trained_world.workspace)
    model = trained_world.extra["recall"]
    args = ["index", "build", "--model", model, "--uri", index_server.uri, "-w", ws]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "build under a new version" in result.output
    assert index.count() == len(table)


def test_an_unknown_model_exits_2_with_the_fix(
    trained_world: Settings, index_server: LiteServer
) -> None:
    ws = str(trained_world.workspace)
    args = ["index", "build", "--model", "recall:nosuchversion", "--uri", index_server.uri]
    result = CliRunner().invoke(app, [*args, "-w", ws])
    assert result.exit_code == 2
    assert "mmrec train recall" in result.output
