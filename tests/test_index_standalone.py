"""A real Milvus server (PyPI's `milvus` wheel: Milvus 2.3.5 standalone) as the index engine.

The index build and the serving pipeline reach it by URI + token, exactly as a remote Milvus:
HNSW on flushed (sealed) segments, the pointer registry, the neighbour lists, one request
served through it. Skips (one line) only where the server cannot start.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from index.build import build_index, neighbours_root
from index.collections import ContentIndex
from index.connection import connect, is_server
from index.errors import IndexConnectionError
from index.neighbours import NeighbourLists
from index.standalone import StandaloneServer, server_available
from mmrec.settings import Settings
from mmrec.vocab import S2V, V2V
from serving.schemas import RecommendRequest
from tests.test_serving_pipeline import active_user


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    if not server_available():
        pytest.skip("no Milvus server: `make venv` installs it (pip install -e '.[milvus]')")
    server = StandaloneServer(tmp_path_factory.mktemp("milvus-standalone"))
    try:
        server.start()
    except IndexConnectionError as err:
        pytest.skip(f"the Milvus server cannot start here: {err}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_world(
    serving_world: Settings, serving_config, milvus_server: StandaloneServer
) -> Settings:
    """The module's world with its index built on the server (URI + token, as a remote one)."""
    settings = serving_world.replace(milvus_uri=milvus_server.uri, milvus_token=milvus_server.token)
    build_index(settings, serving_config.recall_model, show_progress=False)
    return settings


def test_the_server_refuses_clients_without_its_token(milvus_server: StandaloneServer) -> None:
    assert milvus_server.token_file.stat().st_mode & 0o077 == 0  # the owner's only
    with pytest.raises((IndexConnectionError, MilvusException, grpc.RpcError)):
        connect(milvus_server.uri, token="root:Milvus", timeout=5.0).list_collections()
    client = connect(milvus_server.uri, token=milvus_server.token)
    assert is_server(client)


def test_the_index_builds_on_the_server_with_hnsw_on_sealed_segments(server_world) -> None:
    client = connect(server_world.milvus_uri, token=server_world.milvus_token)
    index = ContentIndex(client)
    record = index.record()
    assert record.spec.index_type == "HNSW" and record.spec.search_params["ef"] >= 150
    state = client.describe_index(record.collection, "vector")
    assert state["index_type"] == "HNSW" and int(state["indexed_rows"]) == record.rows > 0
    assert index.count() == record.rows
    lists = NeighbourLists.load(neighbours_root(server_world), record.build_id)
    assert lists is not None and len(lists.tables[V2V].keys) == record.rows
    assert len(lists.tables[S2V].keys) > 0
    # a search with a limit above the spec's ef still answers (ef is raised to the limit)
    query = np.asarray(client.get(record.collection, ids=[int(lists.tables[V2V].keys[0])],
                                  output_fields=["vector"])[0]["vector"], np.float32)  # fmt: skip
    assert len(index.search(query[None], min(record.rows, 300))[0]) == min(record.rows, 300)


def test_a_request_is_served_through_the_server(server_world, serving_config) -> None:
    from serving.pipeline import RecommendationPipeline

    pipeline = RecommendationPipeline(server_world, serving_config)
    assert pipeline.recall.lists is not None
    user_id, _ = active_user(pipeline)
    out = pipeline.recommend(RecommendRequest(user_id=user_id, scene="home", k=10)).response
    assert out.degraded == [] and len(out.items) == 10
    assert {"u2v", "v2v"} <= {c for item in out.items for c in item.found_by}
    assert pipeline.models["index"].startswith("content_vectors_v")


def test_a_client_with_the_token_sees_the_same_collections(milvus_server, server_world) -> None:
    client = MilvusClient(uri=milvus_server.uri, token=milvus_server.token)
    assert ContentIndex(client).collection in client.list_collections()
