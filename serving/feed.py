"""The feed page, served by the bento beside the APIs at /feed/ (serving/service.py mounts it).

The page (`feed_page.html`: plain HTML and JavaScript, no build step, nothing from a CDN)
asks the service's own POST /recommend and POST /events; this module answers what the page
needs besides: item titles, materials and covers for display, a user's recent clicks, and
sample users, every one by the data's own ids (strings or integers: mmrec/id_map.py). Media
is served only by item id from the workspace's `item_media.parquet`: no request names a path.
A catalog without images (imported data) shows titles instead.
"""

from __future__ import annotations

import io
import secrets
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fastapi import FastAPI
from PIL import Image

from mmrec.errors import UserError
from mmrec.id_map import WorkspaceIds

PAGE = Path(__file__).with_name("feed_page.html")
MAX_ITEMS = 400  # ids per /feed/api/items call: k (<= 200) recommended + recent clicks
RECENT_CLICKS = 12
SAMPLE_USERS = 30
COVER_CACHE = 256  # covers kept per process

feed_app = FastAPI(title="mmrec feed page", docs_url=None, redoc_url=None, openapi_url=None)


class FeedCatalog:
    """What the page shows of items and users, read once from the workspace's raw tables;
    ids in and out are the data's own (`ids` maps them to the raw tables' keys)."""

    def __init__(self, raw_dir: Path, ids: WorkspaceIds) -> None:
        self.ids = ids
        self.items = pd.read_parquet(
            raw_dir / "items.parquet", columns=["item_id", "title", "material", "category"]
        ).set_index("item_id")
        media = raw_dir / "item_media.parquet"
        self.media = media if media.exists() else None
        users = pd.read_parquet(raw_dir / "users.parquet", columns=["user_id"]).user_id
        self.sample_users = ids.user.externals(users.head(SAMPLE_USERS).tolist())
        # a user with no history (cold start): past the largest integer id, or a fresh name
        if ids.user.strings:
            self.new_user: int | str = f"new-shopper-{secrets.token_hex(4)}"
        else:
            self.new_user = int(users.max()) + 1 if len(users) else 0
        self._covers = lru_cache(maxsize=COVER_CACHE)(self._read_cover)

    def describe(self, item_ids: list[str]) -> list[dict]:
        """Display fields of the known ones among `item_ids` (the data's ids), in their order;
        UnknownIdError (a 400 naming `ids`) for a value that cannot be an item id here."""
        keys = [self.ids.item.key(i, "ids") for i in dict.fromkeys(item_ids)]
        known = [k for k in dict.fromkeys(keys) if k is not None and k in self.items.index]
        rows = self.items.loc[known]
        return [
            {
                "item_id": own,
                "title": str(row.title),
                "material": str(row.material),
                "category": str(row.category),
                "cover": self.media is not None,  # the page shows the title when it fails
            }
            for own, row in zip(
                self.ids.item.externals(known), rows.itertuples(index=False), strict=True
            )
        ]

    def cover(self, item_id: str) -> tuple[bytes, str] | None:
        """The cover of item `item_id` (the data's id; UnknownIdError when it cannot be one),
        None when the item is unknown or has none."""
        key = self.ids.item.key(item_id, "item_id")
        return None if key is None else self._covers(key)

    def recent_clicks(self, user: dict[str, list]) -> list[int | str]:
        """The newest clicked items of a user's online features (newest first), by their ids."""
        return self.ids.item.externals(recent_clicks(user))

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


def parse_ids(ids: str, repeated: list[str]) -> list[str]:
    """Item ids from `ids=3,17,42` (comma-separated) and `id=B07X-12&id=...` (one each: for
    ids holding a comma); a UserError naming the field when there are too many."""
    parts = [p for p in ids.split(",") if p.strip()] + [p for p in repeated if p.strip()]
    if len(parts) > MAX_ITEMS:
        raise UserError(f"ids: at most {MAX_ITEMS} item ids per call, got {len(parts)}")
    return parts


def recent_clicks(user: dict[str, list]) -> list[int]:
    """The newest clicked items of a user's online features (newest first), as keys."""
    sequence = (user.get("item_click_seq") or [None])[0]
    if sequence is None:
        return []
    return [int(i) for i in np.asarray(sequence)[:RECENT_CLICKS]]
