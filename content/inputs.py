"""Raw content inputs (the generator's data contract) and the checks that decide skips.

Files under `Settings.raw_dir`:
- items.parquet: item_id, material, title, category, sku_ids, publish_ts, duration_s
- item_media.parquet: item_id, cover_png (PNG bytes), frame_pngs (PNG bytes; videos only)
- item_labels.parquet: item_id, category_tags (list), quality_label

What an item is encoded from follows the data profile (mmrec.world_manifest.DataProfile):
- a catalog without images (`image` false): the title alone; the media file is not read;
- a catalog with images: the title and the cover, or for videos the frames when the catalog
  has them (`frames` true), else the cover. An item whose cover is null (the data says it has
  none) is encoded from its title alone; a cover whose bytes do not decode is a defect.

An item is skipped, never crashing its batch, when its title is empty, its cover does not
decode, it is a video with no frames (or none that decode) in a catalog with frames, or it has
no media row in a catalog with images. The reason is a short code (REASONS) logged with the
item id and counted.
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
from mmrec.errors import UserError

log = logging.getLogger(__name__)

ITEMS = "items.parquet"
MEDIA = "item_media.parquet"
LABELS = "item_labels.parquet"
ITEM_COLUMNS = ("item_id", "material", "title", "category", "publish_ts")
NO_COVER = (2**64 - 1).to_bytes(8, "little")  # hashed for a null cover: a length no bytes have

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
    is_video: bool  # images are frames to sample and pool
    images: list[Image.Image]  # the cover, the video's decodable frames, or none (text only)

    @property
    def has_visual(self) -> bool:
        return bool(self.images)


@dataclass
class Skipped:
    item_id: int
    reason: str  # one of REASONS
    detail: str


def read_items(raw_dir: Path) -> pd.DataFrame:
    """The item catalog, sorted by item_id, with a clear error when the world is missing."""
    path = raw_dir / ITEMS
    if not path.exists():
        raise UserError(f"{path} not found: generate a world first (mmrec generate)")
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
        raise UserError(f"{path} not found: generate a world first (mmrec generate)")
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


def media_by_item(
    raw_dir: Path, wanted: set[int], image: bool = True
) -> Iterator[tuple[int, dict[str, object] | None]]:
    """(item id, its media row or None) once for every wanted item: the rows found first, in
    file order, then the items without one, by id. Without images (`image` false) the media
    file is not read and every item comes with None."""
    seen: set[int] = set()
    for media in iter_media(raw_dir, wanted) if image else ():
        item_id = int(media["item_id"])  # type: ignore[call-overload]
        if item_id not in seen:
            seen.add(item_id)
            yield item_id, media
    for item_id in sorted(wanted - seen):
        yield item_id, None


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
        cover = media.get("cover_png")
        if cover is None:  # no cover (text only) differs from empty bytes (unreadable)
            h.update(NO_COVER)
        else:
            feed(cover)  # type: ignore[arg-type]
        for frame in media.get("frame_pngs") or []:  # type: ignore[attr-defined]
            feed(frame or b"")
    return h.hexdigest()[:20]


def prepare(
    item: dict[str, object],
    media: dict[str, object] | None,
    image: bool = True,
    frames: bool = True,
) -> Prepared | Skipped:
    """Check one item and decode its images; a Skipped says why it cannot be encoded.

    `image` / `frames`: whether the catalog has covers / video frames (the data profile).
    Without images, `media` is not looked at and every titled item is Prepared text only."""
    item_id = int(item["item_id"])
    title = item.get("title")
    if title is None or (isinstance(title, float) and np.isnan(title)) or not str(title).strip():
        return Skipped(item_id, EMPTY_TITLE, "title is empty")
    title = str(title).strip()
    if not image:
        return Prepared(item_id, title, False, [])
    if media is None:
        return Skipped(item_id, MISSING_MEDIA, "no row in item_media.parquet")
    covers = []
    if media.get("cover_png") is not None:  # null: the item has no cover, only its title
        try:
            covers.append(decode_image(media.get("cover_png")))  # type: ignore[arg-type]
        except BadImage as err:
            return Skipped(item_id, UNREADABLE_COVER, str(err))
    if not (frames and item.get("material") == "video"):
        return Prepared(item_id, title, False, covers)
    raw_frames = list(media.get("frame_pngs") or [])  # type: ignore[call-overload]
    if not raw_frames:
        return Skipped(item_id, VIDEO_WITHOUT_FRAMES, "video has no frames")
    decoded, errors = [], []
    for k, data in enumerate(raw_frames):
        try:
            decoded.append(decode_image(data))
        except BadImage as err:
            errors.append(f"frame {k}: {err}")
    if not decoded:
        return Skipped(item_id, UNREADABLE_FRAMES, "; ".join(errors))
    if errors:
        log.warning(
            "item %d: %d of %d frames unreadable, pooling the rest (%s)",
            item_id,
            len(errors),
            len(raw_frames),
            errors[0],
        )
    return Prepared(item_id, title, True, decoded)
