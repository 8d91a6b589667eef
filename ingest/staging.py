"""What the steps of one import share: its DuckDB connection and where it writes, and the
raw layout's schemas, defaults and file names (ingest/importer.py runs the steps)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from ingest.contract import CONTRACT, RAW_SCHEMAS, SKU_EVENT_TYPES, default
from ingest.readers import sql_string
from mmrec.io import write_parquet
from mmrec.settings import Settings

SKU_TYPES_SQL = ", ".join(f"'{t}'" for t in SKU_EVENT_TYPES)


@dataclass
class Staging:
    """One import's work area: the DuckDB connection holding its tables (`in_<table>` as
    loaded, then the events and catalog being built), the workspace's settings, the raw folder
    being built (`out`) and the import's clock (events after `now` are dropped)."""

    con: duckdb.DuckDBPyConnection
    settings: Settings
    out: Path
    now: datetime

    def sql(self, query: str) -> list[tuple]:
        return self.con.execute(query).fetchall()

    def one(self, query: str) -> Any:
        return self.sql(query)[0][0]


@functools.cache
def written_schema(name: str) -> pa.Schema:
    """RAW_SCHEMAS[name] with the pandas metadata the generator's files carry (nullable
    event ids read back as Int64), so pandas reads both alike."""
    schema = RAW_SCHEMAS[name]
    nullable_ints = ("item_id", "sku_id") if name == "events" else ()

    def dtype(f: pa.Field) -> str | type:
        if f.type == pa.int64():
            return "Int64" if f.name in nullable_ints else "int64"
        if f.type == pa.float64():
            return "float64"
        if isinstance(f.type, pa.TimestampType):
            return f"datetime64[{f.type.unit}, UTC]"
        return object

    frame = pd.DataFrame({f.name: pd.Series(dtype=dtype(f)) for f in schema})
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).schema


def write_raw(table: pa.Table, name: str, path: Path) -> None:
    """Write `table` as raw file `name` (a RAW_SCHEMAS key), its columns in schema order."""
    schema = written_schema(name)
    write_parquet(table.select(schema.names).cast(schema), path)


def day_file(settings: Settings, root: Path, day: date) -> Path:
    """Day `day`'s events file under `root` (a raw folder laid out like settings.raw_dir)."""
    return root / settings.events_file(day).relative_to(settings.raw_dir)


def default_sql(table: str, column: str) -> str:
    """The contract's default value of a column, as a SQL literal."""
    field = CONTRACT[table].field(column)
    value = default(field)
    assert value is not None, f"{table}.{column} has no default"
    return value if field.type in (pa.int64(), pa.float64()) else sql_string(value)


MATERIAL_SQL = "coalesce({table}.material, " + default_sql("items", "material") + ")"


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)
