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
"""

from __future__ import annotations

import logging
from typing import Any

from index.collections import BuildReport, build_content_index
from index.connection import open_index
from index.errors import VectorIndexError
from mmrec.errors import UserError
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL
from models.item_content import ContentVersionError
from models.recall_vectors import catalog_table, item_vectors, load_recall
from models.store import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = LATEST_RECALL_MODEL


class ModelMismatchError(VectorIndexError):
    """The recall model and the features (or index) it is used with do not belong together."""


def load_recall_model(settings: Settings, ref: Any = DEFAULT_MODEL) -> LoadedModel:
    """The recall model `ref` (a tag in the workspace's BentoML store, or a stored model)."""
    try:
        return load_recall(settings, ref)
    except UserError as err:  # not in the store, not a tag, or without its known items
        raise ModelMismatchError(str(err)) from None


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
    return build_content_index(
        open_index(settings, uri),
        vectors,
        table.attributes,
        recall.version,
        show_progress=show_progress,
    )
