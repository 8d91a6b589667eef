"""`mmrec data import`: check contract files, normalize them and write the raw layout.

The import reads the user's events and catalog (`ingest.contract`, docs/data-contract.md),
drops the rows no stage can use (counted, with examples, never silently) and writes exactly
what the world generator writes under `Settings.raw_dir`, plus `manifest.json` and
`import_report.json`.

- All or nothing: the raw folder is built beside the old one and swapped in whole
  (`mmrec.io.building_folder`); on any error the workspace is unchanged.
- Appendable: the raw events of an earlier import are merged with the new ones (exact
  duplicates removed); the catalog is replaced by the new items file. Day partitions whose
  rows did not change are linked, not rewritten, and the same files imported again are a
  no-op (their sha256 are in the manifest).
- Vectorised: events go through DuckDB and Arrow, a day partition at a time on the way out.
- Ids: integers or strings per entity; the raw layout holds integer keys, string ids mapped
  through the workspace's id map (`ingest/ids.py`, `mmrec/id_map.py`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ingest.contract import (
    CONTRACT,
    MAX_EXAMPLES,
    MEDIA_BYTES,
    MEDIA_PIXELS,
    RAW_EVENTS,
    RAW_ITEM_MEDIA,
    RAW_SCHEMAS,
    SKU_EVENT_TYPES,
    DataContractError,
    contract_error,
    default,
)
from ingest.ids import ImportIds
from ingest.movielens import write_movielens_contract
from ingest.readers import ROWS_PER_FILE, InputFiles, Loaded, discover, example, load, sql_string
from mmrec.errors import UserError
from mmrec.id_map import IdMap, id_map_path, id_types
from mmrec.io import (
    building_folder,
    progress,
    read_json,
    recover_folder,
    write_json,
    write_parquet,
)
from mmrec.settings import Settings
from mmrec.vocab import MATERIALS

ADAPTERS: dict[str, Callable[[Path], tuple[Path, Path]]] = {
    "movielens-100k": write_movielens_contract
}
SPILL = ".import-spill"  # DuckDB's temporary files, beside the raw folder
MANIFEST, REPORT = "manifest.json", "import_report.json"
# DuckDB spills to SPILL beyond this; a catalog with its images inline as bytes
# is held whole (104k items with covers and frames, 3.4 GB: 4 GB ran out of memory)
DUCKDB_MEMORY = f"{psutil.virtual_memory().total // 2**31}GB"  # half the machine
EVENT_BATCH_ROWS = 262_144
MEDIA_BATCH = 1_024
# Why an event row is dropped, in the order the checks apply (a row counts under the first).
FUTURE, UNKNOWN_ITEM, UNKNOWN_SKU, DUPLICATE = "future", "unknown_item", "unknown_sku", "duplicate"
DROP_REASONS = (FUTURE, UNKNOWN_ITEM, UNKNOWN_SKU, DUPLICATE)
# The columns that make an event; two rows equal on all of them are one event.
EVENT_KEY = (
    "user_id",
    "item_id",
    "sku_id",
    "event_type",
    "source",
    "position",
    "session_id",
    "watch_seconds",
    "event_timestamp",
)
_SKU_TYPES = ", ".join(f"'{t}'" for t in SKU_EVENT_TYPES)
UNKNOWN_CATEGORY = "unknown"  # an item with neither category nor tags
# Image formats the import decodes (and content/ later): PIL's others include EPS, which it
# renders through Ghostscript, and formats no catalog needs.
MEDIA_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MEDIA_COLUMNS = ("image", "frames")


class WorkspaceHasDataError(UserError):
    """The raw folder holds data an import must not merge with (a generated world)."""


@dataclass
class Counted:
    """How many rows something happened to, and the first few of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import read, wrote and dropped (also `raw/import_report.json`)."""

    rows_read: dict[str, int]  # input file -> data rows
    events_written: int  # events in the raw layout after the import
    events_added: int  # of which this import added
    already_present: int  # input events the raw layout already held
    days: int
    first_day: str
    last_day: str
    dropped: dict[str, Counted]  # reason -> rows (DROP_REASONS)
    images_missing: Counted
    images_unreadable: Counted
    ignored_columns: dict[str, list[str]]  # input table -> columns outside the contract
    # entity -> its id kind ("int", "string"; null: none yet) and the keys this import added
    ids: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    unchanged: bool = False  # the same files were imported before: nothing was written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ImportReport:
        fields = dict(payload)
        fields["dropped"] = {k: Counted(**v) for k, v in payload["dropped"].items()}
        for name in ("images_missing", "images_unreadable"):
            fields[name] = Counted(**payload[name])
        return cls(**fields)


def import_data(
    settings: Settings,
    events: Path | None = None,
    items: Path | None = None,
    skus: Path | None = None,
    users: Path | None = None,
    *,
    adapter: str | None = None,
    strict: bool = False,
    replace: bool = False,
    now: datetime | None = None,
) -> ImportReport:
    """Import contract files (each a file or a folder of CSV/Parquet) into the raw layout.

    `adapter` instead of events/items converts a known data set first (ADAPTERS). `strict`
    turns any dropped row into a DataContractError; `replace` starts from an empty raw folder
    instead of appending to an earlier import (needed over a generated world). Events later
    than `now` (default: the wall clock, UTC) are dropped.
    """
    if adapter is not None:
        if events is not None or items is not None:
            raise UserError("give either an adapter or events/items files, not both")
        if adapter not in ADAPTERS:
            raise UserError(f"unknown adapter {adapter!r}; use one of {', '.join(ADAPTERS)}")
        with tempfile.TemporaryDirectory(prefix="mmrec-adapter-") as folder:
            events, items = ADAPTERS[adapter](Path(folder))
            paths = {"events": events, "items": items, "skus": skus, "users": users}
            return _import(settings, paths, adapter, strict, replace, now)
    if events is None or items is None:
        raise UserError("an import needs an events and an items file (or an adapter)")
    paths = {"events": events, "items": items, "skus": skus, "users": users}
    return _import(settings, paths, None, strict, replace, now)


def _import(
    settings: Settings,
    paths: dict[str, Path | None],
    adapter: str | None,
    strict: bool,
    replace: bool,
    now: datetime | None,
) -> ImportReport:
    started = time.perf_counter()
    recover_folder(settings.raw_dir)  # an import a crash stopped mid-swap
    sources = {table: discover(table, path) for table, path in paths.items() if path is not None}
    previous = _previous_manifest(settings, replace)
    inputs = {table: _fingerprint(files) for table, files in sources.items()}
    carried = set()  # tables read back from the earlier import (their ids are keys)
    for table in ("skus", "users"):  # kept from the earlier import unless given again
        if table not in sources and previous and table in previous["inputs"]:
            sources[table] = discover(table, settings.raw_dir / f"{table}.parquet")
            inputs[table] = previous["inputs"][table]
            carried.add(table)
    if adapter:
        inputs["adapter"] = adapter
    if previous and previous["inputs"] == inputs and (settings.raw_dir / REPORT).exists():
        report = ImportReport.from_json(read_json(settings.raw_dir / REPORT))
        if not report.dropped[FUTURE].count:  # else some of them may be due now
            report.unchanged, report.elapsed_s = True, round(time.perf_counter() - started, 3)
            _check_strict(report.dropped, strict)
            return report

    spill = settings.data_dir / SPILL
    shutil.rmtree(spill, ignore_errors=True)
    try:
        with building_folder(settings.raw_dir) as out:
            con = _connect(spill)
            try:
                build = _Build(
                    con, settings, sources, carried, previous, out, now or datetime.now(UTC)
                )
                report, manifest = build.run(strict)
            finally:
                con.close()
            manifest["inputs"] = inputs
            report.elapsed_s = round(time.perf_counter() - started, 3)
            write_json(manifest, out / MANIFEST)
            write_json(report.to_json(), out / REPORT)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return report


def _connect(temp_dir: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # a time without a zone is UTC
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute(f"SET temp_directory = {sql_string(str(temp_dir))}")
    return con


def _previous_manifest(settings: Settings, replace: bool) -> dict[str, Any] | None:
    """The manifest of an earlier import to append to; None when starting afresh."""
    path = settings.raw_dir / MANIFEST
    if replace or not settings.raw_dir.exists():
        return None
    manifest = read_json(path) if path.exists() else {}
    if manifest.get("source") == "import":
        return manifest
    if not any(settings.raw_dir.iterdir()):
        return None
    what = (
        f"a generated world (scale={manifest['scale']}, seed={manifest['seed']})"
        if "scale" in manifest
        else "data that no import wrote"
    )
    raise WorkspaceHasDataError(
        f"{settings.raw_dir} holds {what}; pass --replace to replace it with the imported "
        "data, or import into another workspace (--workspace)"
    )


def _fingerprint(inputs: InputFiles) -> list[dict[str, str]]:
    return [
        {"file": inputs.name(i), "sha256": _sha256(path)} for i, path in enumerate(inputs.files)
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_strict(dropped: dict[str, Counted], strict: bool) -> None:
    if not strict or not any(c.count for c in dropped.values()):
        return
    parts = [
        f"{reason} {c.count} ({'; '.join(c.examples)})" for reason, c in dropped.items() if c.count
    ]
    raise DataContractError(
        f"strict import: rows would be dropped: {', '.join(parts)}. Fix: correct or remove "
        "those rows, or import without --strict to drop them"
    )


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


def _write(table: pa.Table, name: str, path: Path) -> None:
    """Write `table` as raw file `name` (a RAW_SCHEMAS key), its columns in schema order."""
    schema = written_schema(name)
    write_parquet(table.select(schema.names).cast(schema), path)


def _day_file(settings: Settings, root: Path, day: date) -> Path:
    """Day `day`'s events file under `root` (a raw folder laid out like settings.raw_dir)."""
    return root / settings.events_file(day).relative_to(settings.raw_dir)


class _Build:
    """One import's work in one DuckDB connection, writing into the staging raw folder."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        settings: Settings,
        sources: dict[str, InputFiles],
        carried: set[str],
        previous: dict[str, Any] | None,
        out: Path,
        now: datetime,
    ) -> None:
        self.con, self.settings, self.sources, self.out = con, settings, sources, out
        self.carried, self.previous, self.now = carried, previous, now
        self.names: dict[int, str] = {}  # event _fi -> file name (old raw files negative)

    def sql(self, query: str) -> list[tuple]:
        return self.con.execute(query).fetchall()

    def one(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def run(self, strict: bool) -> tuple[ImportReport, dict[str, Any]]:
        loaded = {
            table: load(self.con, files, CONTRACT[table], f"in_{table}")
            for table, files in self.sources.items()
        }
        ids = ImportIds(
            self.con, loaded, self.carried, id_types(self.previous) if self.previous else None
        )
        kinds = ids.decide()
        ids.to_integer_keys()
        for table, column in (("items", "item_id"), ("skus", "sku_id"), ("users", "user_id")):
            if table in loaded:
                self._check_unique(loaded[table], column)
        self._check_media_paths(loaded["items"])
        self._check_event_ids(loaded["events"])
        added = ids.to_string_keys(IdMap(id_map_path(self.settings)))
        self._dimensions("skus" in loaded)
        events = loaded["events"]
        self.names = {i: events.inputs.name(i) for i in range(len(events.inputs.files))}
        old_days = self._stage_events(events)
        dropped, counts = self._drops()
        _check_strict(dropped, strict)
        days = self._write_events(old_days)
        start = _midnight(days[0])
        n_users = self._write_users(start, "users" in loaded)
        media = self._write_catalog(loaded["items"], start)
        n_skus = self._write_skus("skus" in loaded)
        by_type = dict(self.sql("SELECT event_type, count(*) FROM final GROUP BY 1 ORDER BY 1"))
        report = ImportReport(
            rows_read={name: n for table in loaded.values() for name, n in table.rows.items()},
            events_written=counts["total"],
            events_added=counts["added"],
            already_present=counts["present"],
            days=len(days),
            first_day=days[0].isoformat(),
            last_day=days[-1].isoformat(),
            dropped=dropped,
            images_missing=media["missing"],
            images_unreadable=media["unreadable"],
            ignored_columns={t: v.ignored for t, v in loaded.items() if v.ignored},
            ids={e: {"kind": k, "new_keys": added.get(e, 0)} for e, k in kinds.items()},
        )
        manifest = self._manifest(days, n_users, n_skus, by_type, media)
        manifest["id_types"] = kinds
        return report, manifest

    # -- checks ---------------------------------------------------------------------------

    def _check_unique(self, table: Loaded, column: str) -> None:
        rows = self.sql(
            f"SELECT _fi, _row, {column}, count(*) OVER () FROM (SELECT *, count(*) OVER "
            f"(PARTITION BY {column}) AS n FROM {table.name}) WHERE n > 1 "
            f"ORDER BY _fi, _row LIMIT {MAX_EXAMPLES}"
        )
        if rows:
            raise contract_error(
                str(table.inputs.given),
                column,
                f"holds duplicate ids (each {table.inputs.table[:-1]} must appear once)",
                [example(table.inputs.name(fi), row, value) for fi, row, value, _ in rows],
                rows[0][3],
                f"keep one row per {column}",
            )

    def _check_media_paths(self, items: Loaded) -> None:
        """Image and frame paths must name files inside the items file's folder: an absolute
        path, a `..` or a link leading out is refused before anything is read."""
        types = dict(self.sql(f"SELECT column_name, column_type FROM (DESCRIBE {items.name})"))
        folders = [path.parent.resolve() for path in items.inputs.files]
        for column in MEDIA_COLUMNS:
            if types[column] not in ("VARCHAR", "VARCHAR[]"):
                continue  # bytes, not paths
            rows = self.sql(
                f"SELECT _fi, _row, {column} FROM {items.name} WHERE {column} IS NOT NULL "
                "ORDER BY _fi, _row"
            )
            outside = []
            for fi, row, value in rows:
                escape = _first_outside(folders[fi], [value] if isinstance(value, str) else value)
                if escape is not None:
                    outside.append(example(items.inputs.name(fi), row, escape))
            if outside:
                raise contract_error(
                    str(items.inputs.given),
                    column,
                    "names files outside the items file's folder (an absolute path, '..' or "
                    "a link leading out)",
                    outside,
                    len(outside),
                    "give paths relative to the items file's folder that stay inside it "
                    "(copy the files in)",
                )

    def _check_event_ids(self, events: Loaded) -> None:
        """Content events need an item_id, sku_* events a sku_id."""
        for column, condition, kind in (
            ("item_id", f"NOT IN ({_SKU_TYPES})", "content events"),
            ("sku_id", f"IN ({_SKU_TYPES})", "sku_* events"),
        ):
            where = f"event_type {condition} AND {column} IS NULL"
            total = self.one(f"SELECT count(*) FROM {events.name} WHERE {where}")
            if total:
                rows = self.sql(
                    f"SELECT _fi, _row, event_type FROM {events.name} WHERE {where} "
                    f"ORDER BY _fi, _row LIMIT {MAX_EXAMPLES}"
                )
                raise contract_error(
                    str(events.inputs.given),
                    column,
                    f"is empty in {kind}, which need it",
                    [example(events.inputs.name(fi), row, value) for fi, row, value in rows],
                    total,
                    f"give every {kind[:-1]} its {column}"
                    + (", or use a sku_* event type" if column == "item_id" else ""),
                )

    def _dimensions(self, has_skus: bool) -> None:
        material = _MATERIAL.format(table="in_items")
        self.con.execute(
            f"CREATE TEMP TABLE items_dim AS SELECT item_id, {material} AS material FROM in_items"
        )
        skus = "SELECT sku_id FROM in_skus" if has_skus else "SELECT NULL::BIGINT AS sku_id"
        self.con.execute(f"CREATE TEMP TABLE skus_dim AS {skus} WHERE sku_id IS NOT NULL")

    # -- events ---------------------------------------------------------------------------

    def _old_events(self) -> tuple[str, dict[date, tuple[int, int]]]:
        """A query over the earlier import's events (rows as the new ones; _fi < 0, by day)
        and their per-day fingerprints; ("", {}) when there is no earlier import."""
        if self.previous is None:
            return "", {}
        raw = self.settings.raw_dir
        files = [
            _day_file(self.settings, raw, date.fromisoformat(d)) for d in self.previous["days"]
        ]
        fis = {path: k - len(files) for k, path in enumerate(files)}
        self.names.update({fi: str(path.relative_to(raw)) for path, fi in fis.items()})
        listed = ", ".join(f"({fi}, {sql_string(str(path))})" for path, fi in fis.items())
        self.con.execute(
            f"CREATE TEMP TABLE old_files AS SELECT * FROM (VALUES {listed}) t(_fi, filename)"
        )
        paths = ", ".join(sql_string(str(path)) for path in files)
        scan = f"read_parquet([{paths}], filename = true, file_row_number = true)"
        columns = ", ".join(f"o.{c}" for c in EVENT_KEY[:-1])
        rows = (
            f"SELECT f._fi, o.file_row_number + 1, true, {columns}, "
            "CAST(o.event_timestamp AS TIMESTAMPTZ), NULL "
            f"FROM {scan} o JOIN old_files f USING (filename)"
        )
        fingerprints = self.sql(
            f"SELECT CAST(event_timestamp AS DATE), count(*), {_fingerprint_sql()} "
            "FROM (SELECT * REPLACE (CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp) "
            f"FROM {scan}) GROUP BY 1"
        )
        return rows, {day: (n, h) for day, n, h in fingerprints}

    def _stage_events(self, events: Loaded) -> dict[date, tuple[int, int]]:
        """Table `ev`: the new events (normalized) and the earlier import's, each with its
        drop reason (null: kept) and material; table `final`: the kept events, one row per
        distinct event. Returns the earlier import's per-day fingerprints (rows, hash sum)."""
        con = self.con
        content = f"event_type NOT IN ({_SKU_TYPES})"
        rows = f"""SELECT _fi, _row, false AS _old, user_id,
              CASE WHEN {content} THEN item_id END AS item_id, sku_id, event_type,
              coalesce(source, CASE WHEN {content} THEN {_default("events", "source")} END)
                AS source,
              coalesce(position, CASE WHEN {content} THEN {_default("events", "position")} END)
                AS position,
              coalesce(session_id, {_default("events", "session_id")}) AS session_id,
              watch_seconds, event_ts AS event_timestamp, event_id
            FROM {events.name}"""
        old_rows, old_days = self._old_events()
        if old_rows:
            rows += f" UNION ALL {old_rows}"
        sku_check = "true" if self.one("SELECT count(*) FROM skus_dim") else "false"
        con.execute(
            f"""CREATE TEMP TABLE ev AS
            SELECT r.*, r._fi * {ROWS_PER_FILE} + r._row AS _ord, i.material,
              CASE WHEN r.event_timestamp > TIMESTAMPTZ '{self.now.isoformat()}' THEN '{FUTURE}'
                   WHEN r.item_id IS NOT NULL AND i.item_id IS NULL THEN '{UNKNOWN_ITEM}'
                   WHEN {sku_check} AND r.event_type IN ({_SKU_TYPES}) AND s.sku_id IS NULL
                     THEN '{UNKNOWN_SKU}'
              END AS _drop
            FROM ({rows}) r
            LEFT JOIN items_dim i ON r.item_id = i.item_id
            LEFT JOIN skus_dim s ON r.sku_id = s.sku_id"""
        )
        con.execute(f"DROP TABLE {events.name}")
        if "event_id" in events.present:  # a repeated event_id is a duplicate: keep the first
            con.execute(
                f"""UPDATE ev SET _drop = '{DUPLICATE}' WHERE _ord IN (
                SELECT _ord FROM (SELECT _ord, row_number() OVER (PARTITION BY event_id
                ORDER BY _ord) AS n FROM ev WHERE _drop IS NULL AND event_id IS NOT NULL)
                WHERE n > 1)"""
            )
        key = ", ".join(EVENT_KEY)
        con.execute(
            f"""CREATE TEMP TABLE final AS
            SELECT {key}, any_value(material) AS material, min(_ord) AS _ord,
              bool_or(_old) AS _has_old, count(*) FILTER (WHERE NOT _old) AS _n_new,
              count(*) AS _n
            FROM ev WHERE _drop IS NULL GROUP BY {key}"""
        )
        return old_days

    def _where(self, ord_: int) -> tuple[str, int]:
        fi, row = divmod(ord_, ROWS_PER_FILE)
        return self.names[fi], row

    def _drops(self) -> tuple[dict[str, Counted], dict[str, int]]:
        """Dropped rows by reason (with examples) and the final table's counts."""
        details = {
            FUTURE: "'at ' || strftime(event_timestamp, '%Y-%m-%dT%H:%M:%SZ')",
            UNKNOWN_ITEM: "'item_id ' || item_label(item_id) || ' is not in the items file'",
            UNKNOWN_SKU: "'sku_id ' || sku_label(sku_id) || ' is not in the skus file'",
            DUPLICATE: "'event_id ' || event_id || ' seen before'",
        }
        dropped = {reason: Counted() for reason in DROP_REASONS}
        counts = self.sql("SELECT _drop, count(*) FROM ev WHERE _drop IS NOT NULL GROUP BY 1")
        for reason, count in counts:
            rows = self.sql(
                f"SELECT _ord, {details[reason]} FROM ev WHERE _drop = '{reason}' "
                f"ORDER BY _ord LIMIT {MAX_EXAMPLES}"
            )
            dropped[reason] = Counted(count, [self._example(o, d) for o, d in rows])
        [(total, added, present, repeats)] = self.sql(
            "SELECT count(*), count(*) FILTER (WHERE NOT _has_old), "
            "coalesce(sum(_n_new) FILTER (WHERE _has_old), 0), "
            "coalesce(sum(_n - 1) FILTER (WHERE NOT _has_old), 0) FROM final"
        )
        if repeats:
            same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM f.{c}" for c in EVENT_KEY)
            rows = self.sql(
                f"SELECT e._ord, f._ord FROM ev e JOIN final f ON {same} "
                f"WHERE e._drop IS NULL AND NOT f._has_old AND e._ord <> f._ord "
                f"ORDER BY e._ord LIMIT {MAX_EXAMPLES}"
            )
            first = [self._where(kept) for _, kept in rows]
            examples = [
                self._example(o, f"same as {file} row {row}")
                for (o, _), (file, row) in zip(rows, first, strict=True)
            ]
            previous = dropped[DUPLICATE]
            dropped[DUPLICATE] = Counted(
                previous.count + int(repeats), (previous.examples + examples)[:MAX_EXAMPLES]
            )
        self.con.execute("DROP TABLE ev")
        if not total:
            raise DataContractError(
                f"no event is left to import: {_summary(dropped)}. Fix: check the event times "
                "and that the events' item and sku ids are in the catalog files"
            )
        return dropped, {"total": int(total), "added": int(added), "present": int(present)}

    def _example(self, ord_: int, detail: str) -> str:
        file, row = self._where(ord_)
        return f"{file} row {row}: {detail}"

    def _write_events(self, old_days: dict[date, tuple[int, int]]) -> list[date]:
        """One Parquet file per day with events, rows sorted by (time, user); a day whose rows
        equal the earlier import's keeps its file (a hard link). Returns the days."""
        per_day = {
            day: (int(n), int(h))
            for day, n, h in self.sql(
                f"SELECT CAST(event_timestamp AS DATE), count(*), {_fingerprint_sql()} "
                "FROM final GROUP BY 1 ORDER BY 1"
            )
        }
        days = sorted(per_day)
        changed = [day for day in days if old_days.get(day) != per_day[day]]
        self.con.execute("CREATE TEMP TABLE changed (day DATE)")
        if changed:
            self.con.executemany("INSERT INTO changed VALUES (?)", [(d,) for d in changed])
        order = ", ".join(EVENT_KEY[-1:] + EVENT_KEY[:-1])
        columns = ", ".join(RAW_EVENTS.names)
        reader = self.con.sql(
            f"SELECT {columns} FROM final WHERE CAST(event_timestamp AS DATE) IN "
            f"(SELECT day FROM changed) ORDER BY {order}"
        ).to_arrow_reader(EVENT_BATCH_ROWS)
        rows = _Rows(reader)
        for day in progress(days, "event days"):
            target = _day_file(self.settings, self.out, day)
            if day in changed:
                _write(rows.take(per_day[day][0]).combine_chunks(), "events", target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                _link(_day_file(self.settings, self.settings.raw_dir, day), target)
        rows.finish()
        return days

    # -- catalog and users ----------------------------------------------------------------

    def _write_users(self, start: datetime, has_users: bool) -> int:
        if not has_users:
            self.con.execute(
                "CREATE TEMP TABLE in_users (user_id BIGINT, region VARCHAR, "
                "registered_at TIMESTAMPTZ)"
            )
        users = self.con.sql(
            f"""SELECT user_id,
              coalesce(nullif(trim(u.region), ''), {_default("users", "region")}) AS region,
              coalesce(u.registered_at, e.first_ts, TIMESTAMPTZ '{start.isoformat()}')
                AS registered_at
            FROM in_users u FULL OUTER JOIN (SELECT user_id, min(event_timestamp) AS first_ts
              FROM final GROUP BY user_id) e USING (user_id)
            ORDER BY user_id"""
        ).to_arrow_table()
        _write(users, "users.parquet", self.out / "users.parquet")
        return users.num_rows

    def _write_skus(self, has_skus: bool) -> int:
        query = (
            f"SELECT sku_id, category, coalesce(price, {_default('skus', 'price')}) AS price "
            "FROM in_skus ORDER BY sku_id"
            if has_skus
            else "SELECT NULL::BIGINT AS sku_id, NULL AS category, NULL::DOUBLE AS price LIMIT 0"
        )
        skus = self.con.sql(query).to_arrow_table()
        _write(skus, "skus.parquet", self.out / "skus.parquet")
        return skus.num_rows

    def _write_catalog(self, items: Loaded, start: datetime) -> dict[str, Any]:
        """items.parquet, item_labels.parquet and item_media.parquet (sorted by item_id);
        returns the media counts."""
        self.con.execute(
            f"""CREATE TEMP TABLE catalog AS
            SELECT i._fi, i._row, i.item_id, {_MATERIAL.format(table="i")} AS material,
              coalesce(i.title, '') AS title,
              coalesce(nullif(trim(i.category), ''), i.tags[1], '{UNKNOWN_CATEGORY}')
                AS category,
              coalesce(i.sku_ids, []::BIGINT[]) AS sku_ids,
              coalesce(i.publish_ts, e.first_ts, TIMESTAMPTZ '{start.isoformat()}')
                AS publish_ts,
              coalesce(i.duration_s, {_default("items", "duration_s")}) AS duration_s,
              coalesce(i.tags, []::VARCHAR[]) AS tags, i.image, i.frames
            FROM {items.name} i LEFT JOIN (SELECT item_id, min(event_timestamp) AS first_ts
              FROM final WHERE item_id IS NOT NULL GROUP BY item_id) e USING (item_id)
            ORDER BY item_id"""
        )
        catalog = self.con.sql(
            "SELECT * EXCLUDE (image, frames), [category] || list_filter(tags, lambda t, k: "
            "t <> category AND list_position(tags, t) = k) AS category_tags, "
            "NULL::VARCHAR AS quality_label FROM catalog ORDER BY item_id"
        ).to_arrow_table()
        for name in ("items.parquet", "item_labels.parquet"):
            _write(catalog, name, self.out / name)
        return self._write_media(items)

    def _write_media(self, items: Loaded) -> dict[str, Any]:
        """Covers and frames, read from the paths (relative to the items file's folder) or
        bytes the items file gives; a missing or unreadable file leaves the row without it,
        an oversize one (MEDIA_BYTES, MEDIA_PIXELS) refuses the import, naming the rows."""
        folders = [path.parent for path in items.inputs.files]
        counts: dict[str, Any] = {"missing": Counted(), "unreadable": Counted()}
        counts |= {f"oversize_{column}": Counted() for column in MEDIA_COLUMNS}
        counts |= dict.fromkeys(MEDIA_COLUMNS, 0)
        n_items = self.one("SELECT count(*) FROM catalog")
        reader = self.con.sql(
            "SELECT _fi, _row, item_id, image, frames FROM catalog ORDER BY item_id"
        ).to_arrow_reader(MEDIA_BATCH)
        path = self.out / "item_media.parquet"
        with pq.ParquetWriter(path, RAW_ITEM_MEDIA) as writer:
            for batch in progress(reader, "item media", total=-(-n_items // MEDIA_BATCH)):
                covers, frames = [], []
                for row in batch.to_pylist():
                    where = f"{items.inputs.name(row['_fi'])} row {row['_row']}"
                    read = functools.partial(_read_media, folder=folders[row["_fi"]])
                    cover = None
                    if row["image"] is not None:
                        cover = _counted(read(row["image"]), counts, where, "image")
                    shots = [
                        shot
                        for frame in row["frames"] or []
                        if (shot := _counted(read(frame), counts, where, "frames")) is not None
                    ]
                    counts["image"] += cover is not None
                    counts["frames"] += bool(shots)
                    covers.append(cover)
                    frames.append(shots)
                columns = {"item_id": batch["item_id"], "cover_png": covers, "frame_pngs": frames}
                writer.write_table(pa.table(columns, schema=RAW_ITEM_MEDIA))
        for column in MEDIA_COLUMNS:
            if (oversize := counts[f"oversize_{column}"]).count:
                raise contract_error(
                    str(items.inputs.given),
                    column,
                    f"holds images over the limits ({MEDIA_BYTES} bytes a file, "
                    f"{MEDIA_PIXELS} pixels)",
                    oversize.examples,
                    oversize.count,
                    "shrink or re-encode those images, or leave them out",
                )
        return counts

    # -- manifest -------------------------------------------------------------------------

    def _manifest(
        self,
        days: list[date],
        n_users: int,
        n_skus: int,
        by_type: dict[str, int],
        media: dict[str, Any],
    ) -> dict[str, Any]:
        categories = [c for (c,) in self.sql("SELECT DISTINCT category FROM catalog ORDER BY 1")]
        if n_skus:
            sku_categories = self.sql("SELECT DISTINCT category FROM in_skus ORDER BY 1")
            categories += [c for (c,) in sku_categories if c not in categories]
        materials = {m for (m,) in self.sql("SELECT DISTINCT material FROM catalog")}
        linked = self.one(
            "SELECT (SELECT count(*) FROM final WHERE sku_id IS NOT NULL) "
            "+ (SELECT count(*) FROM catalog WHERE len(sku_ids) > 0)"
        )
        return {
            "source": "import",
            "start": _midnight(days[0]).isoformat(),
            "end": (_midnight(days[-1]) + timedelta(days=1)).isoformat(),
            "days": [d.isoformat() for d in days],
            "n_users": n_users,
            "n_items": self.one("SELECT count(*) FROM catalog"),
            "n_skus": n_skus,
            "n_events": sum(by_type.values()),
            "events_by_type": by_type,
            "categories": categories,
            "modalities": {
                "text": True,
                "image": media["image"] > 0,
                "frames": media["frames"] > 0,
            },
            "has_skus": bool(n_skus and linked),
            "materials": [m for m in MATERIALS if m in materials],
        }


def _default(table: str, column: str) -> str:
    """The contract's default value of a column, as a SQL literal."""
    field = CONTRACT[table].field(column)
    value = default(field)
    assert value is not None, f"{table}.{column} has no default"
    return value if field.type in (pa.int64(), pa.float64()) else sql_string(value)


_MATERIAL = "coalesce({table}.material, " + _default("items", "material") + ")"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _fingerprint_sql() -> str:
    """Order-free fingerprint of a day's rows: the sum of their hashes."""
    return f"sum(hash({', '.join(EVENT_KEY)}, material)::HUGEINT)"


def _summary(dropped: dict[str, Counted]) -> str:
    return ", ".join(f"{reason} {c.count}" for reason, c in dropped.items() if c.count) or "none"


class _Rows:
    """Take consecutive row ranges from a stream of record batches."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self._batches: Iterator[pa.RecordBatch] = iter(reader)
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0

    def take(self, n: int) -> pa.Table:
        while self._buffered < n:
            batch = next(self._batches)
            self._buffer.append(batch)
            self._buffered += batch.num_rows
        table = pa.Table.from_batches(self._buffer)
        rest = table.slice(n)
        self._buffer, self._buffered = rest.to_batches(), rest.num_rows
        return table.slice(0, n)

    def finish(self) -> None:
        """Read the stream to its end (DuckDB's connection is busy until then)."""
        leftover = self._buffered + sum(batch.num_rows for batch in self._batches)
        assert leftover == 0, f"{leftover} rows were never taken"


def _link(source: Path, target: Path) -> None:
    """A hard link (free, and it outlives the old folder), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _first_outside(folder: Path, paths: list[str]) -> str | None:
    """The first of `paths` (relative to `folder`, which is resolved) that leads outside it:
    absolute, through `..`, or through a link; None when all stay inside."""
    for relative in paths:
        try:
            if Path(relative).is_absolute() or not (folder / relative).resolve().is_relative_to(
                folder
            ):
                return relative
        except (OSError, ValueError):  # a NUL byte, a link loop
            return relative
    return None


@dataclass(frozen=True)
class MediaProblem:
    """Why an image was not taken: `kind` missing or unreadable (counted, the item goes on
    without it) or oversize (the import is refused); `text` names the file."""

    kind: str
    text: str


def _read_media(value: str | bytes, folder: Path) -> tuple[bytes | None, MediaProblem | None]:
    """(bytes, None) for a readable image given as bytes or a path (relative to `folder`,
    inside it: `_check_media_paths`); (None, the problem) else. Files over MEDIA_BYTES and
    images over MEDIA_PIXELS (read from the header, before any pixel is decoded) are
    oversize; formats outside MEDIA_FORMATS are unreadable."""
    name = value if isinstance(value, str) else "(bytes)"
    if isinstance(value, str):
        path = folder / value
        if not path.is_file():
            return None, MediaProblem("missing", f"{name} missing")
        if (size := path.stat().st_size) > MEDIA_BYTES:
            return None, MediaProblem("oversize", f"{name} is {size} bytes")
        value = path.read_bytes()
    if len(value) > MEDIA_BYTES:
        return None, MediaProblem("oversize", f"{name} is {len(value)} bytes")
    try:
        with Image.open(io.BytesIO(value), formats=MEDIA_FORMATS) as image:
            if (pixels := image.width * image.height) > MEDIA_PIXELS:
                size = f"{image.width}x{image.height}"
                return None, MediaProblem("oversize", f"{name} is {size} = {pixels} pixels")
            image.verify()
    except Image.DecompressionBombError:  # over twice PIL's own limit: refused at open
        return None, MediaProblem("oversize", f"{name} is a decompression bomb")
    except Exception:  # PIL raises many kinds on bad data: all mean "unreadable"
        return None, MediaProblem("unreadable", f"{name} unreadable")
    return value, None


def _counted(
    result: tuple[bytes | None, MediaProblem | None],
    counts: dict[str, Any],
    where: str,
    column: str,
) -> bytes | None:
    """The bytes; a problem is counted under its kind (oversize ones per column) with
    `where` as an example."""
    data, problem = result
    if problem is not None:
        kind = f"oversize_{column}" if problem.kind == "oversize" else problem.kind
        counter = counts[kind]
        counter.count += 1
        if len(counter.examples) < MAX_EXAMPLES:
            counter.examples.append(f"{where} {column}: {problem.text}")
    return data
