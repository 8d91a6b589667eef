"""The item catalog's content side, built one way for training and serving.

Training reads item rows from Feast's offline store (a point-in-time join at the end of the
data), serving from the online snapshot of the same feature service; both hand their rows to
`item_content_from_frame` (ranking) or `models.recall_inputs.item_table_from_frame` (recall),
which share two rules: embeddings are stacked with a width check (models/feature_columns.py),
and a catalog whose rows mix content versions is refused (the rows would live in different
embedding spaces). `check_content_versions` then holds the catalog to the versions a model was trained with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmrec.arrays import find_sorted
from mmrec.errors import UserError
from mmrec.vocab import CONTENT_MODALITIES, TEXT_DIM, VISUAL_DIM
from models.feature_columns import stack_embeddings

log = logging.getLogger(__name__)

# What makes two embeddings comparable: the encoders and the fusion that wrote them.
CONTENT_VERSION_FIELDS = ("encoder_name", "encoder_version", "fusion_version")
NO_VERSION = "none"  # the version of a catalog without content


class ContentVersionError(UserError):
    """Item content of mixed or other versions than a model was trained with."""


def content_versions(frame: pd.DataFrame, fields: Iterable[str]) -> dict[str, str]:
    """The one value of each version field over `frame`'s rows ("none" when absent or all
    null); raises ContentVersionError when the rows mix values."""
    versions = {}
    for name in fields:
        values = frame[name].dropna().unique() if name in frame.columns else []
        if len(values) > 1:
            raise ContentVersionError(
                f"item features mix {name}s {sorted(map(str, values))}: re-run "
                "`mmrec content encode` and `mmrec features materialize`"
            )
        versions[name] = str(values[0]) if len(values) else NO_VERSION
    return versions


def check_content_versions(
    model_tag: str,
    trained: Mapping[str, object],
    versions: Mapping[str, str],
    fields: Iterable[str],
    retrain: str,
) -> None:
    """Raise ContentVersionError when `versions` (the catalog's) differ from the versions
    recorded in a model's metadata `trained`, on any of `fields` (a field the model did not
    record differs too)."""
    differ = {
        name: (trained.get(name), versions.get(name))
        for name in fields
        if trained.get(name) != versions.get(name)
    }
    if differ:
        raise ContentVersionError(
            f"{model_tag} was trained on other item content than the catalog has "
            f"(model, catalog): {differ}; retrain with `{retrain}`"
        )


@dataclass
class ItemContent:
    """Text and visual embeddings per item id; row 0 is the all-zero "no content" row.

    item_ids: (M,) sorted int64; text: (M + 1, TEXT_DIM) float32; visual: (M + 1, VISUAL_DIM)
    float32, or None for a catalog without images; versions: CONTENT_VERSION_FIELDS of every
    row.
    """

    item_ids: np.ndarray
    text: Tensor
    visual: Tensor | None
    versions: dict[str, str]

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Table rows (int64, same shape as `item_ids`) of the ids; 0 for ids without content."""
        return content_rows(self.item_ids, item_ids)


def content_rows(table_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Rows of `item_ids` in a content table of sorted `table_ids` whose row 0 is "no
    content" (ItemContent's layout): same shape as `item_ids`, 0 for ids not in the table."""
    pos, hit = find_sorted(table_ids, np.asarray(item_ids, dtype=np.int64).ravel())
    return np.where(hit, pos + 1, 0).reshape(np.shape(item_ids))


def item_content_from_frame(
    frame: pd.DataFrame, modalities: tuple[str, ...] = CONTENT_MODALITIES
) -> ItemContent:
    """ItemContent from rows of item_id, text_emb, visual_emb and the version fields (Feast's
    offline rows in training, the online snapshot's columns in serving). `modalities`: the
    content modalities the model reads; rows missing any of them have no content."""
    has = frame.text_emb.notna()
    if "visual" in modalities:
        has &= frame.visual_emb.notna()
    frame = frame[has].sort_values("item_id")
    versions = content_versions(frame, CONTENT_VERSION_FIELDS)

    def table(column: str, width: int) -> Tensor:
        rows = stack_embeddings(frame[column], width) if len(frame) else np.zeros((0, width))
        return torch.from_numpy(np.vstack([np.zeros((1, width), np.float32), rows]))

    visual = table("visual_emb", VISUAL_DIM) if "visual" in modalities else None
    log.info("item content: %d items with %s embeddings %s", len(frame), modalities, versions)
    return ItemContent(
        frame.item_id.to_numpy(np.int64), table("text_emb", TEXT_DIM), visual, versions
    )
