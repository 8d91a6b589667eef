"""`mmrec index build`: the trained item tower over Feast's item features -> a new collection.

1. Load the recall model from the BentoML store (default `recall:latest`) with the item ids its
   ID table learned (saved next to the weights).
2. Read every published catalog item's `recall` item features through Feast at the end of the
   data (`models.recall_inputs.load_item_table`, the same table training and evaluation use),
   and refuse when the content encoder versions differ from the model's.
3. Items the ID table did not learn wear UNKNOWN_ITEM_ID (the model's rule), so cold items are
   placed by their content fields.
4. Encode, then `build_content_index` under the model's version: the collection name says which
   tower made the vectors, and serving checks its recall model against it.
5. Before the alias moves, search every item's V2V query and every SKU's S2V query in the new
   collection once and store the neighbour lists beside it (index.neighbours), so a request
   searches Milvus live for U2V only. The same model's active version without lists gets them
   added in place (a build from before the lists existed); requests meanwhile search live.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from index import registry
from index.collections import BuildReport, ContentIndex, build_content_index
from index.connection import is_server, open_index
from index.errors import VectorIndexError, VersionInUseError
from index.neighbours import TOP_N, NeighbourLists, prune, search_table
from index.schema import CONTENT_ALIAS, check_metadata, collection_name
from mmrec.errors import UserError
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL, MATERIALS, S2V, V2V
from models.item_content import ContentVersionError
from models.layers import inference
from models.recall import SkuQuery, encode_queries
from models.recall_vectors import catalog_table, item_vectors, load_recall
from models.store import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = LATEST_RECALL_MODEL
SKU_CATEGORY_REF = "sku_attributes:sku_category"  # in the `recall` service (S2V seeds)
SKU_READ_CHUNK = 2_000


class ModelMismatchError(VectorIndexError):
    """The recall model and the features (or index) it is used with do not belong together."""


def load_recall_model(settings: Settings, ref: Any = DEFAULT_MODEL) -> LoadedModel:
    """The recall model `ref` (a tag in the workspace's BentoML store, or a stored model)."""
    try:
        return load_recall(settings, ref)
    except UserError as err:  # not in the store, not a tag, or without its known items
        raise ModelMismatchError(str(err)) from None


def neighbours_root(settings: Settings) -> Path:
    """Where the neighbour lists of every build live: `<data>/index/neighbours/<build id>/`."""
    return settings.data_dir / "index" / "neighbours"


def v2v_queries(recall: LoadedModel, stored: np.ndarray) -> np.ndarray:
    """Stored item vectors (Q, d) as V2V queries (the model's V2V adapter, if any)."""
    adapter = recall.model.v2v_adapter
    stored = np.asarray(stored, dtype=np.float32)
    if adapter is None or len(stored) == 0:
        return stored
    with inference(adapter):
        return adapter(torch.from_numpy(stored)).numpy()


def sku_queries(recall: LoadedModel, sku_ids: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """S2V queries (Q, d) of SKUs with their category indexes (the model's category order)."""
    query = SkuQuery(
        sku_id=torch.as_tensor(np.asarray(sku_ids, np.int64)),
        sku_category=torch.as_tensor(np.asarray(categories, np.int64)),
    )
    return encode_queries(recall.model, S2V, query).numpy()


def sku_categories(store, sku_ids: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    """Each SKU's category index in `categories` as the online store has it (what a request's
    S2V seeds read), -1 where it has none."""
    lookup = {c: i for i, c in enumerate(categories)}
    out = []
    for start in range(0, len(sku_ids), SKU_READ_CHUNK):
        rows = [{"sku_id": int(s)} for s in sku_ids[start : start + SKU_READ_CHUNK]]
        values = store.get_online_features(features=[SKU_CATEGORY_REF], entity_rows=rows)
        out += [lookup.get(c, -1) for c in values.to_dict()["sku_category"]]
    return np.asarray(out, dtype=np.int64)


def compute_neighbours(
    index: ContentIndex,
    recall: LoadedModel,
    vectors: np.ndarray,
    attributes: pd.DataFrame,
    skus: tuple[np.ndarray, np.ndarray],
) -> NeighbourLists:
    """V2V lists of every item and S2V lists of every (SKU, category) in `skus`, searched in
    `index` (the new collection): index.neighbours."""
    item_ids = attributes["item_id"].to_numpy(np.int64)
    order = np.argsort(item_ids)
    item_ids, vectors = item_ids[order], vectors[order]
    codes = attributes["material"].map(MATERIALS.index).to_numpy(np.int64)[order]
    no_tags = np.full(len(item_ids), -1, np.int64)
    queries = v2v_queries(recall, vectors)
    tables = {
        V2V: search_table(
            index, item_ids, no_tags, queries, TOP_N[V2V], item_ids, codes, "V2V lists"
        )
    }
    sku_ids, categories = skus
    known = categories >= 0
    tables[S2V] = search_table(
        index, sku_ids[known], categories[known],
        sku_queries(recall, sku_ids[known], categories[known]), TOP_N[S2V], item_ids, codes,
        "S2V lists",
    )  # fmt: skip
    catalog = check_metadata(attributes, len(attributes)).iloc[order].reset_index(drop=True)
    # as the collection stores it (a FLOAT field): what a scan would read back
    catalog["quality"] = catalog["quality"].astype(np.float32).astype(np.float64)
    return NeighbourLists(index.record().build_id, tables, catalog)


def build_index(
    settings: Settings,
    model_tag: str = DEFAULT_MODEL,
    uri: str | None = None,
    *,
    store=None,
    show_progress: bool = True,
) -> BuildReport:
    """Encode the catalog with the recall model's item tower and swap it in (module docstring)."""
    recall = load_recall_model(settings, model_tag)
    store = store or open_store(settings)
    table = catalog_table(settings, recall, store)
    try:  # the one way vectors are made: the ranker's shared encoder input reads the same
        vectors = item_vectors(recall, table)
    except ContentVersionError as err:
        raise ModelMismatchError(str(err)) from None
    log.info(
        "encoded %d items (%d known to the ID table) with %s",
        len(table), table.stats["items_known"], recall.tag,
    )  # fmt: skip
    client = open_index(settings, uri)
    root = neighbours_root(settings)
    sku_ids = _sku_ids(settings)
    skus = (sku_ids, sku_categories(store, sku_ids, recall.categories))

    engine = "server" if is_server(client) else "lite"

    def with_lists(index: ContentIndex) -> None:
        lists = compute_neighbours(index, recall, vectors, table.attributes, skus)
        lists.save(root, engine)

    try:
        report = build_content_index(
            client, vectors, table.attributes, recall.version,
            show_progress=show_progress, before_swap=with_lists,
        )  # fmt: skip
    except VersionInUseError:
        report = _add_missing_lists(client, recall, root, with_lists)
    prune(root, [r.build_id for r in registry.versions(client, CONTENT_ALIAS)], engine)
    return report


def _add_missing_lists(client, recall: LoadedModel, root: Path, with_lists) -> BuildReport:
    """The model's version is active already: give it neighbour lists if it has none, else
    refuse as before (train a new model to rebuild)."""
    active = ContentIndex(client)
    record = active.record()
    if NeighbourLists.load(root, record.build_id) is not None:
        raise VersionInUseError(
            f"{collection_name(recall.version)} is the active index and has its neighbour "
            "lists; build under a new version (train a new recall model) to rebuild"
        )
    started = time.perf_counter()
    with_lists(ContentIndex.pinned(client, record))
    log.info("added neighbour lists to %s", record.collection)
    return BuildReport(
        record.collection, recall.version, record.rows, record.dim,
        time.perf_counter() - started, (),
    )  # fmt: skip


def _sku_ids(settings: Settings) -> np.ndarray:
    """The SKUs of the data (`data/raw/skus.parquet`), or none."""
    path = settings.raw_dir / "skus.parquet"
    if not path.exists():
        return np.empty(0, np.int64)
    return np.unique(pd.read_parquet(path, columns=["sku_id"]).sku_id.to_numpy(np.int64))
