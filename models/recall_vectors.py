"""The recall item tower's vectors of a catalog, made one way for the index and the ranker.

`mmrec index build` stores these vectors in the vector index (index/build.py); the ranker's
shared-encoder input (`RankingConfig.use_recall_vector`, the talk's "one multimodal item
space for recall and ranking") reads the same vectors in training and in serving. All three
call `item_vectors`: the recall model's item tower over an `ItemTable` (the recall service's
item features), after holding its content versions to the model's and giving the items the
ID table never learned `UNKNOWN_ITEM_ID`. So the ranker sees, for each item, the vector the
index holds for the recall model it records (`RECALL_MODEL_KEY` in its metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL
from mmrec.world_manifest import world_end
from models.item_content import check_content_versions, content_rows
from models.recall import RecallConfig, TwoTowerRecall, encode_items
from models.recall_inputs import VERSION_FIELDS, ItemTable, catalog_ids, load_item_table
from models.store import LoadedModel, load_stored

# The ranker's metadata key naming the recall model whose vectors it reads.
RECALL_MODEL_KEY = "recall_model"


def load_recall(settings: Settings, ref: Any = LATEST_RECALL_MODEL) -> LoadedModel:
    """The recall model `ref` with the item ids its ID table learned (UserError when the
    store lacks it or it was saved without them)."""
    loaded = load_stored(settings, ref, TwoTowerRecall, RecallConfig, "mmrec train recall")
    if loaded.known_item_ids is None:
        raise UserError(
            f"{loaded.tag} was saved without its known item ids: retrain with `mmrec train recall`"
        )
    return loaded


def item_vectors(recall: LoadedModel, table: ItemTable) -> np.ndarray:
    """(len(table), out_dim) float32: the item tower's vector of every table row, items the
    model's ID table did not learn as UNKNOWN_ITEM_ID; ContentVersionError when the table's
    content versions are not the model's."""
    check_content_versions(
        recall.tag, recall.metadata, table.versions, VERSION_FIELDS, "mmrec train recall"
    )
    table.set_known(recall.known_item_ids)
    return encode_items(recall.model, table.inputs(np.arange(len(table)))).numpy()


def catalog_table(settings: Settings, recall: LoadedModel, store) -> ItemTable:
    """The whole catalog's recall item features through Feast at the end of the data (the
    table `mmrec index build` encodes)."""
    return load_item_table(store, catalog_ids(settings), world_end(settings), recall.categories)


@dataclass(frozen=True)
class ItemVectors:
    """Recall vectors by item id, laid out as models.item_content.ItemContent: item_ids (M,)
    sorted; vectors (M + 1, out_dim) float32 whose row 0 (ids outside the table) is zero;
    model_tag: the recall model that made them."""

    item_ids: np.ndarray
    vectors: Tensor
    model_tag: str

    @classmethod
    def from_table(cls, recall: LoadedModel, table: ItemTable) -> ItemVectors:
        vectors = item_vectors(recall, table)
        padded = np.vstack([np.zeros((1, vectors.shape[1]), np.float32), vectors])
        return cls(table.item_id.copy(), torch.from_numpy(padded), recall.tag)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """As named arrays (a serving snapshot's files); `from_arrays` reads them back."""
        return {
            "vectors.item_ids": self.item_ids,
            "vectors.vectors": self.vectors.numpy(),
            "vectors.model_tag": np.array([self.model_tag]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ItemVectors | None:
        """From `to_arrays`'s arrays (memory maps share their pages); None without them."""
        if "vectors.item_ids" not in arrays:
            return None
        return cls(
            arrays["vectors.item_ids"],
            torch.from_numpy(arrays["vectors.vectors"]),
            str(arrays["vectors.model_tag"][0]),
        )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def of(self, item_ids: Tensor) -> Tensor:
        """(..., out_dim) vectors of `item_ids` (any shape; unknown ids get zeros)."""
        rows = content_rows(self.item_ids, item_ids.numpy())
        return self.vectors[torch.from_numpy(rows)]


def load_item_vectors(settings: Settings, store, ref: Any = LATEST_RECALL_MODEL) -> ItemVectors:
    """The catalog's vectors under recall model `ref`, as the index build makes them."""
    recall = load_recall(settings, ref)
    return ItemVectors.from_table(recall, catalog_table(settings, recall, store))
