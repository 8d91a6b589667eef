"""Publishing the content stage's offline sources for Feast: `item_embeddings` and
`item_tags`, one `month=YYYY-MM/part.parquet` partition per publish month (mmrec.io's layout of
every offline source), each row stamped with the item's publish time (so a point-in-time join
sees the item's content from the moment it exists) and with the encoder name and version. Each
source is built beside the old one and swapped in whole (mmrec.io.write_partitions): a reader
sees one version or the other, never a mix."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from content import tag_heads
from content.encode_cache import Encoded, list_array
from content.encoding import NO_ENCODER
from mmrec.io import partition_names, write_partitions
from mmrec.settings import Settings

ITEM_EMBEDDINGS = "item_embeddings"
ITEM_TAGS = "item_tags"


def publish(
    settings: Settings,
    items: pd.DataFrame,
    encoded: Encoded,
    preds: tag_heads.Predictions,
    version: str,
    name: str,
    spec: dict[str, str],
    tag_version: str,
) -> dict[str, Path]:
    """Write both sources (visual_emb null for items without an image; quality_label and
    quality_score null when the heads have no quality head) and swap them in."""
    ids = encoded.ids
    publish_ts = items.set_index("item_id").publish_ts.reindex(ids)
    if publish_ts.isna().any():
        raise RuntimeError("encoded items missing from the catalog")
    event_ts = pa.array(
        pd.DatetimeIndex(publish_ts).tz_convert("UTC"), pa.timestamp("us", tz="UTC")
    )
    n = len(ids)
    created = pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC"))
    common = {
        "item_id": pa.array(ids, pa.int64()),
        "event_timestamp": event_ts,
        "created_ts": created,
        "encoder_name": pa.array([name] * n, pa.string()),
        "encoder_version": pa.array([version] * n, pa.string()),
    }
    every = np.ones(n, bool)
    visual_encoder = (
        NO_ENCODER if spec["image"] == NO_ENCODER else f"{spec['image']};{spec['video']}"
    )
    embeddings = pa.table(
        {
            **common,
            "text_encoder": pa.array([spec["text"]] * n, pa.string()),
            "visual_encoder": pa.array([visual_encoder] * n, pa.string()),
            "fusion_version": pa.array([tag_version] * n, pa.string()),
            "text_emb": list_array(encoded.text, every),
            "visual_emb": list_array(encoded.visual, encoded.has_visual),
            "fused_emb": list_array(preds.fused, every),
        }
    )
    tags = pa.table(
        {
            **common,
            "tag_model_version": pa.array([tag_version] * n, pa.string()),
            "category_tags": pa.array(preds.category_tags(), pa.list_(pa.string())),
            "category_probs": list_array(preds.category_probs, every),
            "quality_label": pa.array(preds.quality_labels(), pa.string()),
            "quality_score": pa.nulls(n, pa.float32())
            if preds.quality_score is None
            else pa.array(preds.quality_score, pa.float32()),
        }
    )
    months = partition_names(pd.Series(publish_ts))
    for source, table in ((ITEM_EMBEDDINGS, embeddings), (ITEM_TAGS, tags)):
        write_partitions(table, months, settings.offline_dir / source, whole=True)
    return {source: settings.offline_dir / source for source in (ITEM_EMBEDDINGS, ITEM_TAGS)}
