"""A hand-written world small enough that every analysis query has an answer worked out by hand.

Four users, four items, two SKUs, twenty content events, a few feature rows per view, two
training sets and two item embeddings, written in the layouts the real stages write; then the
real Feast repo is applied and materialized over it, and the analysis exports and views are
built. The expected figures in tests/test_analysis_*.py follow from the tables below.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mmrec.feast_store import apply_repo, materialize, open_store
from mmrec.io import write_parquet
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES
from mmrec.workspace import init_workspace
from mmrec.world_manifest import world_end

END = datetime(2026, 10, 7, tzinfo=UTC)
DAY = timedelta(days=1)
# The content stage's views stay in the repo (the feature services use them), but this world
# has no item_tags output, so that view is not materialized; the analysis must cope with a
# feature view that has no data.
VIEWS_WITHOUT_DATA = ("item_tags",)

USERS = pd.DataFrame({"user_id": [1, 2, 3, 4], "region": ["east", "east", "west", "west"]}).assign(
    registered_at=pd.Timestamp("2026-01-01", tz="UTC")
)
ITEMS = pd.DataFrame(
    {
        "item_id": [1, 2, 3, 4],
        "material": ["video", "live", "shop", "video"],
        "category": ["electronics", "beauty", "electronics", "apparel"],
        "sku_ids": [[1], [2], [1, 2], [2]],
        "publish_ts": pd.to_datetime(
            ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"], utc=True
        ),
        "duration_s": [30.0, 600.0, 0.0, 45.0],
    }
)
SKUS = pd.DataFrame(
    {"sku_id": [1, 2], "category": ["electronics", "beauty"], "price": [10.0, 20.0]}
)

# (user, item, event, source, position, watch seconds); material comes from the item.
CONTENT_EVENTS = [
    *[(u, 1, "impression", "rec", "home", None) for u in (1, 2, 3, 4)],
    (1, 1, "click", "rec", "home", None),
    (1, 1, "watch", "rec", "home", 30.0),
    *[(u, 2, "impression", "search", "home", None) for u in (1, 3)],
    *[(u, 3, "impression", "rec", "detail", None) for u in (2, 3)],
    (3, 3, "click", "rec", "detail", None),
    (3, 3, "cart", "rec", "detail", None),
    *[(u, 4, "impression", "search", "detail", None) for u in (1, 2)],
    (1, 4, "click", "search", "detail", None),
    (2, 4, "click", "search", "detail", None),
    (1, 4, "share", "search", "detail", None),
]


def _events() -> dict[str, pd.DataFrame]:
    material = dict(zip(ITEMS.item_id, ITEMS.material, strict=True))
    rows = [
        {
            "user_id": user,
            "item_id": item,
            "sku_id": None,
            "event_type": event,
            "source": source,
            "position": position,
            "material": material[item],
            "watch_seconds": watch,
        }
        for user, item, event, source, position, watch in CONTENT_EVENTS
    ]
    rows.append(  # product domain: no item, no position; analysis queries must leave it out
        {"user_id": 1, "item_id": None, "sku_id": 1, "event_type": "sku_click", "source": None,
         "position": None, "material": None, "watch_seconds": None}
    )  # fmt: skip
    frame = pd.DataFrame(rows).astype({"item_id": "Int64", "sku_id": "Int64"})
    # Alternate the two last days so the events span day partitions.
    frame["event_timestamp"] = [
        END - (1 + i % 2) * DAY + timedelta(hours=1) for i in range(len(frame))
    ]
    return {
        day: part.reset_index(drop=True)
        for day, part in frame.groupby(frame.event_timestamp.dt.strftime("%Y-%m-%d"))
    }


def _table(columns: dict[str, tuple[list, pa.DataType]]) -> pa.Table:
    return pa.table({name: pa.array(values, kind) for name, (values, kind) in columns.items()})


TS = pa.timestamp("us", tz="UTC")
F32 = pa.float32()
I64 = pa.int64()

# item_stats: item 1 twice (newest at END), item 2 48 h old, item 3 outside the 7-day TTL
# (and its watch ratio null), item 4 never.
ITEM_STATS = {
    "item_id": ([1, 1, 2, 3], I64),
    "event_timestamp": ([END - DAY, END, END - 2 * DAY, datetime(2026, 9, 20, tzinfo=UTC)], TS),
    "impressions_1d": ([3, 4, 2, 2], I64),
    "clicks_1d": ([0, 1, 0, 1], I64),
    "impressions_7d": ([3, 4, 2, 2], I64),
    "clicks_7d": ([0, 1, 0, 1], I64),
    "ctr_7d": ([0.05, 0.25, 0.1, 0.5], F32),
    "ctr_home_7d": ([0.05, 0.25, 0.1, 0.5], F32),
    "ctr_inner_7d": ([0.05, 0.25, 0.1, 0.5], F32),
    "ctr_detail_7d": ([0.05, 0.25, 0.1, 0.5], F32),
    "watch_ratio_7d": ([0.4, 0.5, 0.0, None], F32),
}
ITEM_ATTRIBUTES = {
    "item_id": (ITEMS.item_id.tolist(), I64),
    "event_timestamp": (ITEMS.publish_ts.tolist(), TS),
    "material": (ITEMS.material.tolist(), pa.string()),
    "category": (ITEMS.category.tolist(), pa.string()),
    "category_index": ([CATEGORIES.index(c) for c in ITEMS.category], I64),
    "sku_ids": (ITEMS.sku_ids.tolist(), pa.list_(I64)),
    "publish_ts_s": ([int(t.timestamp()) for t in ITEMS.publish_ts], I64),
    "duration_s": (ITEMS.duration_s.tolist(), F32),
}
SKU_ATTRIBUTES = {
    "sku_id": ([1, 2], I64),
    "event_timestamp": ([datetime(2025, 10, 1, tzinfo=UTC)] * 2, TS),
    "sku_category": (SKUS.category.tolist(), pa.string()),
    "sku_price": (SKUS.price.tolist(), F32),
}
# Users 1-3 have behaviour; user 2's click sequence is empty; user 4 has none at all.
USER_BEHAVIOR_SEQ = {
    "user_id": ([1, 2, 3], I64),
    "event_timestamp": ([END - DAY] * 3, TS),
    **{
        name: (values, pa.list_(I64))
        for name, values in {
            "item_click_seq": [[4, 1], [], [3]],
            "item_watch_seq": [[1], [], []],
            "item_engage_seq": [[4], [], [3]],
            "sku_click_seq": [[1], [], []],
            "sku_cart_seq": [[], [], []],
            "sku_purchase_seq": [[], [], []],
        }.items()
    },
}
USER_CROSS_DOMAIN = {
    "user_id": ([1, 2, 3], I64),
    "event_timestamp": ([END] * 3, TS),
    "cdr_category_affinity": (
        [[1.0] + [0.0] * 11, [0.0, 1.0] + [0.0] * 10, [1.0] + [0.0] * 11],
        pa.list_(F32),
    ),
    "cdr_top_category": (["electronics", "beauty", "electronics"], pa.string()),
    "cdr_event_count_30d": ([5, 2, 1], I64),
}
# Content-stage output as DuckDB sees it: item 2's visual vector is all zeros (a defect).
ITEM_EMBEDDINGS = {
    "item_id": ([1, 2], I64),
    "event_timestamp": (ITEMS.publish_ts.tolist()[:2], TS),
    "encoder_name": (["minilm+effnet"] * 2, pa.string()),
    "encoder_version": (["v1"] * 2, pa.string()),
    "fusion_version": (["f1"] * 2, pa.string()),
    "text_emb": ([[0.6, 0.8], [0.0, 1.0]], pa.list_(F32)),
    "visual_emb": ([[3.0, 4.0], [0.0, 0.0]], pa.list_(F32)),
    "fused_emb": ([[1.0, 0.0], [0.0, 1.0]], pa.list_(F32)),
}
# Two training sets: one naming its labels in manifest.json, one with label_* columns only.
RANKING_SET = pd.DataFrame(
    {
        "user_id": [1, 1, 2, 3],
        "item_id": [1, 2, 4, 3],
        "label_click": [1.0, 0.0, 0.0, 1.0],
        "label_watch": [1.0, None, 0.0, 0.0],
    }
)
RECALL_SET = pd.DataFrame(
    {"user_id": [1, 1, 1, 1, 1], "item_id": [1, 2, 3, 4, 5], "label_positive": [1, 0, 0, 0, 0]}
)


def write_world(settings: Settings) -> None:
    """Write the raw world, offline sources and training sets above into a workspace."""
    raw = settings.raw_dir
    write_parquet(USERS, raw / "users.parquet")
    write_parquet(ITEMS, raw / "items.parquet")
    write_parquet(SKUS, raw / "skus.parquet")
    for day, frame in _events().items():
        write_parquet(frame, raw / "events" / f"day={day}" / "events.parquet")
    (raw / "manifest.json").write_text(json.dumps({"end": END.isoformat()}))
    offline = {
        "item_stats": ITEM_STATS,
        "item_attributes": ITEM_ATTRIBUTES,
        "sku_attributes": SKU_ATTRIBUTES,
        "user_behavior_seq": USER_BEHAVIOR_SEQ,
        "user_cross_domain": USER_CROSS_DOMAIN,
        "item_embeddings": ITEM_EMBEDDINGS,
    }
    for source, columns in offline.items():
        write_parquet(
            _table(columns), settings.offline_dir / source / "month=2026-10" / "part.parquet"
        )
    training = settings.data_dir / "training"
    write_parquet(RANKING_SET, training / "ranking_v1" / "split=train" / "part-00000.parquet")
    (training / "ranking_v1" / "manifest.json").write_text(
        json.dumps({"labels": ["click", "watch"]})
    )
    write_parquet(RECALL_SET, training / "recall-v1" / "split=test" / "part-00000.parquet")


def make_known_world(root: Path) -> Settings:
    """The world above in `root`, with the feature repo applied and materialized at END."""
    init_workspace(root)
    settings = Settings(workspace=root)
    write_world(settings)
    apply_repo(settings)
    store = open_store(settings)
    views = [v.name for v in store.list_feature_views() if v.name not in VIEWS_WITHOUT_DATA]
    materialize(store, world_end(settings), views)
    return settings


def copy_world(settings: Settings, root: Path) -> Settings:
    """A copy with its own online store and analysis outputs. The registry still points at the
    original's offline sources (Feast stores absolute paths): read them, never change them."""
    shutil.copytree(settings.workspace, root, dirs_exist_ok=True)
    return Settings(workspace=root)


_BUILT: dict[str, Settings] = {}


@pytest.fixture(scope="session")
def known_world(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The known world with its analysis views refreshed (online export, views.sql). Read-only.

    Built once per session even when several test modules import this fixture (each import
    registers its own fixture definition, so the world is cached here)."""
    if "known" not in _BUILT:
        from analysis.pipeline import refresh

        settings = make_known_world(tmp_path_factory.mktemp("known"))
        refresh(settings, open_store(settings))
        _BUILT["known"] = settings
    return _BUILT["known"]
