"""The feed page, served by the bento beside the APIs at /feed/ (serving/service.py mounts it).

The page (`feed_page.html`: plain HTML and JavaScript, no build step, nothing from a CDN)
asks the service's own POST /recommend and POST /events; this module answers what the page
needs besides: item titles, materials and covers for display, a user's recent clicks, and
sample users. Media is served only by item id from the workspace's `item_media.parquet`:
no request names a path. A catalog without images (imported data) shows titles instead.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fastapi import FastAPI
from PIL import Image

from mmrec.errors import UserError

PAGE = Path(__file__).with_name("feed_page.html")
MAX_ITEMS = 400  # ids per /feed/api/items call: k (<= 200) recommended + recent clicks
RECENT_CLICKS = 12
SAMPLE_USERS = 30
COVER_CACHE = 256  # covers kept per process

feed_app = FastAPI(title="mmrec feed page", docs_url=None, redoc_url=None, openapi_url=None)


class FeedCatalog:
    """What the page shows of items and users, read once from the workspace's raw tables."""

    def __init__(self, raw_dir: Path) -> None:
        self.items = pd.read_parquet(
            raw_dir / "items.parquet", columns=["item_id", "title", "material", "category"]
        ).set_index("item_id")
        media = raw_dir / "item_media.parquet"
        self.media = media if media.exists() else None
        users = pd.read_parquet(raw_dir / "users.parquet", columns=["user_id"]).user_id
        self.sample_users = users.head(SAMPLE_USERS).astype(int).tolist()
        self.new_user = int(users.max()) + 1 if len(users) else 0  # no history: cold start
        self.cover = lru_cache(maxsize=COVER_CACHE)(self._read_cover)

    def describe(self, item_ids: list[int]) -> list[dict]:
        """Display fields of the known ones among `item_ids`, in their order."""
        known = [i for i in dict.fromkeys(item_ids) if i in self.items.index]
        rows = self.items.loc[known]
        return [
            {
                "item_id": int(i),
                "title": str(row.title),
                "material": str(row.material),
                "category": str(row.category),
                "cover": self.media is not None,  # the page shows the title when it fails
            }
            for i, row in zip(known, rows.itertuples(index=False), strict=True)
        ]

    def _read_cover(self, item_id: int) -> tuple[bytes, str] | None:
        """(image bytes, media type) of the item's cover, None when it has none.

        The file is sorted by item_id: the filter reads the one row group that holds it
        (2,048 rows: ~0.8 s at the 104k-item world, hence the cache)."""
        if self.media is None:
            return None
        table = pq.read_table(
            self.media, columns=["cover_png"], filters=[("item_id", "=", item_id)]
        )
        data = table.column(0)[0].as_py() if table.num_rows else None
        if data is None:
            return None
        try:
            kind = Image.open(io.BytesIO(data)).format  # reads the header only
        except Exception:  # an unreadable image shows as the title
            return None
        return data, Image.MIME.get(kind or "", "application/octet-stream")


def parse_ids(ids: str) -> list[int]:
    """`1,2,3` as item ids; a UserError naming the field otherwise."""
    parts = [p for p in ids.split(",") if p.strip()]
    if len(parts) > MAX_ITEMS:
        raise UserError(f"ids: at most {MAX_ITEMS} item ids per call, got {len(parts)}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise UserError("ids: comma-separated integer item ids, e.g. ids=3,17,42") from None


def recent_clicks(user: dict[str, list]) -> list[int]:
    """The newest clicked items of a user's online features (newest first)."""
    sequence = (user.get("item_click_seq") or [None])[0]
    if sequence is None:
        return []
    return [int(i) for i in np.asarray(sequence)[:RECENT_CLICKS]]
