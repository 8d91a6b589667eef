"""Raw content inputs (the generator's data contract) and the checks that decide skips.

Files under `Settings.raw_dir`:
- items.parquet: item_id, material, title, category, sku_ids, publish_ts, duration_s
- item_media.parquet: item_id, cover_png (PNG bytes), frame_pngs (PNG bytes; videos only)
- item_labels.parquet: item_id, category_tags (list), quality_label

An item is skipped, never crashing its batch, when its title is empty, its cover does not
decode, it is a video with no frames (or none that decode), or it has no media row. The
reason is a short code (REASONS) logged with the item id and counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from content.image_encoder import BadImage, decode_image

log = logging.getLogger(__name__)

ITEMS = "items.parquet"
MEDIA = "item_media.parquet"
LABELS = "item_labels.parquet"
ITEM_COLUMNS = ("item_id", "material", "title", "category", "publish_ts")

EMPTY_TITLE = "empty_title"
UNREADABLE_COVER = "unreadable_cover"
VIDEO_WITHOUT_FRAMES = "video_without_frames"
UNREADABLE_FRAMES = "unreadable_frames"
MISSING_MEDIA = "missing_media"
ENCODE_ERROR = "encode_error"
REASONS = (
    EMPTY_TITLE,
    UNREADABLE_COVER,
    VIDEO_WITHOUT_FRAMES,
    UNREADABLE_FRAMES,
    MISSING_MEDIA,
    ENCODE_ERROR,
)


@dataclass
class Prepared:
    """An item ready to encode: its title and the images its visual embedding comes from."""

    item_id: int
    title: str
    is_video: bool
    images: list[Image.Image]  # the cover, or the video's decodable frames


@dataclass
class Skipped:
    item_id: int
    reason: str  # one of REASONS
    detail: str


def read_items(raw_dir: Path) -> pd.DataFrame:
    """The item catalog, sorted by item_id, with a clear error when the world is missing."""
    path = raw_dir / ITEMS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate a world first (mmrec generate)")
    items = pd.read_parquet(path, columns=list(ITEM_COLUMNS))
    return items.sort_values("item_id", kind="stable").reset_index(drop=True)


def read_labels(raw_dir: Path) -> pd.DataFrame | None:
    path = raw_dir / LABELS
    return pd.read_parquet(path) if path.exists() else None


def iter_media(
    raw_dir: Path, wanted: set[int], batch_rows: int = 1024
) -> Iterator[dict[str, object]]:
    """Media rows of the wanted items, streamed by record batch (the file can be GBs)."""
    path = raw_dir / MEDIA
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate a world first (mmrec generate)")
    if not wanted:
        return
    file = pq.ParquetFile(path)
    wanted_ids = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
    for batch in file.iter_batches(
        batch_size=batch_rows, columns=["item_id", "cover_png", "frame_pngs"]
    ):
        ids = batch.column("item_id").to_numpy()
        keep = np.flatnonzero(np.isin(ids, wanted_ids))
        if len(keep) == 0:
            continue
        covers = batch.column("cover_png")
        frames = batch.column("frame_pngs")
        for i in keep:
            yield {
                "item_id": int(ids[i]),
                "cover_png": covers[int(i)].as_py(),
                "frame_pngs": frames[int(i)].as_py() or [],
            }


def content_hash(item: dict[str, object], media: dict[str, object] | None) -> str:
    """A digest of everything an item's embeddings are computed from (title, material, cover,
    frames): a cached embedding is reused only while this is unchanged."""
    h = hashlib.sha1()

    def feed(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    title = item.get("title")
    feed(str(title if isinstance(title, str) else "").encode())
    feed(str(item.get("material")).encode())
    if media is None:
        feed(b"<no media>")
    else:
        feed(media.get("cover_png") or b"")  # type: ignore[arg-type]
        for frame in media.get("frame_pngs") or []:  # type: ignore[attr-defined]
            feed(frame or b"")
    return h.hexdigest()[:20]


def prepare(item: dict[str, object], media: dict[str, object] | None) -> Prepared | Skipped:
    """Check one item and decode its images; a Skipped says why it cannot be encoded."""
    item_id = int(item["item_id"])
    title = item.get("title")
    if title is None or (isinstance(title, float) and np.isnan(title)) or not str(title).strip():
        return Skipped(item_id, EMPTY_TITLE, "title is empty")
    if media is None:
        return Skipped(item_id, MISSING_MEDIA, "no row in item_media.parquet")
    try:
        cover = decode_image(media.get("cover_png"))  # type: ignore[arg-type]
    except BadImage as err:
        return Skipped(item_id, UNREADABLE_COVER, str(err))
    is_video = item.get("material") == "video"
    if not is_video:
        return Prepared(item_id, str(title).strip(), False, [cover])
    raw_frames = list(media.get("frame_pngs") or [])  # type: ignore[call-overload]
    if not raw_frames:
        return Skipped(item_id, VIDEO_WITHOUT_FRAMES, "video has no frames")
    frames, errors = [], []
    for k, data in enumerate(raw_frames):
        try:
            frames.append(decode_image(data))
        except BadImage as err:
            errors.append(f"frame {k}: {err}")
    if not frames:
        return Skipped(item_id, UNREADABLE_FRAMES, "; ".join(errors))
    if errors:
        log.warning(
            "item %d: %d of %d frames unreadable, pooling the rest (%s)",
            item_id,
            len(errors),
            len(raw_frames),
            errors[0],
        )
    return Prepared(item_id, str(title).strip(), True, frames)
