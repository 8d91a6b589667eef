"""Export the online store to Parquet, so DuckDB can read what serving reads.

The SQLite online store keeps protobuf-serialized values (and DuckDB's sqlite extension cannot be
installed here anyway), and Redis is not a table at all, so the export goes through Feast
itself: `get_online_features` for every entity id the view's offline source knows, in chunks.
One file a view: `data/analysis/online/<view>.parquet` with the join key, each feature, and
`event_timestamp` (the stored row's time; null where the store has no row for the entity).
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from analysis.catalog import FeatureViewInfo
from mmrec.errors import UserError
from mmrec.io import progress, write_parquet
from mmrec.settings import Settings

log = logging.getLogger(__name__)

# Feast scalar type names -> Arrow types, so a column keeps its type even when every value is
# null (an entity the store has no row for).
_ARROW_TYPES = {
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "String": pa.string(),
    "Bool": pa.bool_(),
    "Bytes": pa.binary(),
    "UnixTimestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class ExportStats:
    view: str
    entities: int  # ids asked for (distinct keys of the offline source)
    found: int  # ids the online store has a row for
    seconds: float


def online_dir(settings: Settings) -> Path:
    return settings.data_dir / "analysis" / "online"


def arrow_type(dtype: str) -> pa.DataType | None:
    """The Arrow type of a Feast type name (`Array(X)` -> list<X>); None when unknown."""
    if dtype.startswith("Array(") and dtype.endswith(")"):
        inner = _ARROW_TYPES.get(dtype[len("Array(") : -1])
        return pa.list_(inner) if inner is not None else None
    return _ARROW_TYPES.get(dtype)


def entity_ids(info: FeatureViewInfo) -> list[int]:
    """Distinct join-key values in the view's offline source, sorted; none before the stage
    that writes the source has run."""
    if not glob.glob(info.source_path):
        return []
    rows = duckdb.sql(
        f"SELECT DISTINCT {info.join_key} FROM read_parquet(?) ORDER BY 1",
        params=[info.source_path],
    ).fetchall()
    return [row[0] for row in rows]


def _value_keys(info: FeatureViewInfo) -> list[str]:
    return [*info.feature_names, f"{info.features[0].name}__ts"]


def _to_table(info: FeatureViewInfo, values: dict[str, list]) -> pa.Table:
    columns = {info.join_key: pa.array(values[info.join_key], pa.int64())}
    for feature in info.features:
        columns[feature.name] = pa.array(values[feature.name], arrow_type(feature.dtype))
    # Feast stamps each feature with its row's time; a view's features share one row.
    seconds = values[f"{info.features[0].name}__ts"]
    stamps = [s * 1_000_000 if s else None for s in seconds]  # 0 = no row for this entity
    columns["event_timestamp"] = pa.array(stamps, pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


def export_online(
    settings: Settings, store, infos: list[FeatureViewInfo], chunk: int = 1000
) -> dict[str, ExportStats]:
    """Read every known entity of each view from the online store into one Parquet file."""
    if chunk < 1:
        raise UserError(f"chunk must be >= 1, got {chunk}")
    ids = {info.name: entity_ids(info) for info in infos}
    jobs = [(info, start) for info in infos for start in range(0, len(ids[info.name]), chunk)]
    parts: dict[str, list[pa.Table]] = {info.name: [] for info in infos}
    seconds: dict[str, float] = dict.fromkeys(parts, 0.0)
    for info, start in progress(jobs, "export online store"):
        began = time.perf_counter()
        batch = ids[info.name][start : start + chunk]
        values = store.get_online_features(
            features=info.refs(), entity_rows=[{info.join_key: i} for i in batch]
        ).to_dict(include_event_timestamps=True)
        parts[info.name].append(_to_table(info, values))
        seconds[info.name] += time.perf_counter() - began
    stats = {}
    for info in infos:
        table = (
            pa.concat_tables(parts[info.name])
            if parts[info.name]
            else _to_table(info, {key: [] for key in [info.join_key, *_value_keys(info)]})
        )
        write_parquet(table, online_dir(settings) / f"{info.name}.parquet")
        found = len(table) - table.column("event_timestamp").null_count
        stats[info.name] = ExportStats(info.name, len(table), found, seconds[info.name])
        log.info("exported %s: %d of %d entities online", info.name, found, len(table))
    return stats
