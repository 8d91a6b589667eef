"""Item content attributes (material, category, linked SKUs, publish time) and SKU
attributes, stamped with the time they became true: an item's publish time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import pandas as pd


def build_item_attributes(
    con: duckdb.DuckDBPyConnection,
    items_file: str,
    start: datetime | None,
    end: datetime,
    categories: Sequence[str],
) -> pd.DataFrame:
    """Attributes of items published in [start, end) (start None: any time before `end`),
    stamped at their publish time. `category_index` is the category's position in the data's
    vocabulary `categories` (null outside it): the index of every category vector."""
    return con.execute(
        """
        SELECT item_id, publish_ts AS event_timestamp, material, category,
               (list_position($categories, category) - 1)::BIGINT AS category_index, sku_ids,
               epoch(publish_ts)::BIGINT AS publish_ts_s, duration_s::FLOAT AS duration_s
        FROM read_parquet($items)
        WHERE ($start IS NULL OR publish_ts >= $start) AND publish_ts < $end
        ORDER BY item_id
        """,
        {"items": items_file, "start": start, "end": end, "categories": list(categories)},
    ).df()


def build_sku_attributes(
    con: duckdb.DuckDBPyConnection, skus_file: str, valid_from: datetime
) -> pd.DataFrame:
    """SKU category and price, valid from `valid_from` (the catalog snapshot time)."""
    return con.execute(
        "SELECT sku_id, $t AS event_timestamp, category AS sku_category, price::FLOAT AS sku_price "
        "FROM read_parquet($skus) ORDER BY sku_id",
        {"skus": skus_file, "t": valid_from},
    ).df()
