"""The import's events: the new rows normalised and merged with an earlier import's, each
dropped row counted under its reason with examples, and one Parquet file a day written (a day
whose rows did not change keeps its file, linked)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from ingest.contract import MAX_EXAMPLES, RAW_EVENTS, DataContractError
from ingest.import_report import Counted, summary
from ingest.readers import ROWS_PER_FILE, Loaded, sql_string
from ingest.staging import MATERIAL_SQL, SKU_TYPES_SQL, Staging, day_file, default_sql, write_raw
from mmrec.io import progress

EVENT_BATCH_ROWS = 262_144
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


class EventRows:
    """The events of one import in `st`'s connection: table `ev` (every row with its drop
    reason), then `final` (the kept events, one row per distinct event)."""

    def __init__(self, st: Staging, previous: dict[str, Any] | None, names: dict[int, str]) -> None:
        self.st, self.previous = st, previous
        self.names = names  # event _fi -> file name (the earlier import's files negative)

    def dimensions(self, has_skus: bool) -> None:
        material = MATERIAL_SQL.format(table="in_items")
        self.st.con.execute(
            f"CREATE TEMP TABLE items_dim AS SELECT item_id, {material} AS material FROM in_items"
        )
        skus = "SELECT sku_id FROM in_skus" if has_skus else "SELECT NULL::BIGINT AS sku_id"
        self.st.con.execute(f"CREATE TEMP TABLE skus_dim AS {skus} WHERE sku_id IS NOT NULL")

    def old_events(self) -> tuple[str, dict[date, tuple[int, int]]]:
        """A query over the earlier import's events (rows as the new ones; _fi < 0, by day)
        and their per-day fingerprints; ("", {}) when there is no earlier import."""
        if self.previous is None:
            return "", {}
        raw = self.st.settings.raw_dir
        files = [
            day_file(self.st.settings, raw, date.fromisoformat(d)) for d in self.previous["days"]
        ]
        fis = {path: k - len(files) for k, path in enumerate(files)}
        self.names.update({fi: str(path.relative_to(raw)) for path, fi in fis.items()})
        listed = ", ".join(f"({fi}, {sql_string(str(path))})" for path, fi in fis.items())
        self.st.con.execute(
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
        fingerprints = self.st.sql(
            f"SELECT CAST(event_timestamp AS DATE), count(*), {fingerprint_sql()} "
            "FROM (SELECT * REPLACE (CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp) "
            f"FROM {scan}) GROUP BY 1"
        )
        return rows, {day: (n, h) for day, n, h in fingerprints}

    def stage_events(self, events: Loaded) -> dict[date, tuple[int, int]]:
        """Table `ev`: the new events (normalized) and the earlier import's, each with its
        drop reason (null: kept) and material; table `final`: the kept events, one row per
        distinct event. Returns the earlier import's per-day fingerprints (rows, hash sum)."""
        con = self.st.con
        content = f"event_type NOT IN ({SKU_TYPES_SQL})"
        rows = f"""SELECT _fi, _row, false AS _old, user_id,
              CASE WHEN {content} THEN item_id END AS item_id, sku_id, event_type,
              coalesce(source, CASE WHEN {content} THEN {default_sql("events", "source")} END)
                AS source,
              coalesce(position, CASE WHEN {content} THEN {default_sql("events", "position")} END)
                AS position,
              coalesce(session_id, {default_sql("events", "session_id")}) AS session_id,
              watch_seconds, event_ts AS event_timestamp, event_id
            FROM {events.name}"""
        old_rows, old_days = self.old_events()
        if old_rows:
            rows += f" UNION ALL {old_rows}"
        sku_check = "true" if self.st.one("SELECT count(*) FROM skus_dim") else "false"
        con.execute(
            f"""CREATE TEMP TABLE ev AS
            SELECT r.*, r._fi * {ROWS_PER_FILE} + r._row AS _ord, i.material,
              CASE WHEN r.event_timestamp > TIMESTAMPTZ '{self.st.now.isoformat()}' THEN '{FUTURE}'
                   WHEN r.item_id IS NOT NULL AND i.item_id IS NULL THEN '{UNKNOWN_ITEM}'
                   WHEN {sku_check} AND r.event_type IN ({SKU_TYPES_SQL}) AND s.sku_id IS NULL
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

    def drops(self) -> tuple[dict[str, Counted], dict[str, int]]:
        """Dropped rows by reason (with examples) and the final table's counts."""
        details = {
            FUTURE: "'at ' || strftime(event_timestamp, '%Y-%m-%dT%H:%M:%SZ')",
            UNKNOWN_ITEM: "'item_id ' || item_label(item_id) || ' is not in the items file'",
            UNKNOWN_SKU: "'sku_id ' || sku_label(sku_id) || ' is not in the skus file'",
            DUPLICATE: "'event_id ' || event_id || ' seen before'",
        }
        dropped = {reason: Counted() for reason in DROP_REASONS}
        counts = self.st.sql("SELECT _drop, count(*) FROM ev WHERE _drop IS NOT NULL GROUP BY 1")
        for reason, count in counts:
            rows = self.st.sql(
                f"SELECT _ord, {details[reason]} FROM ev WHERE _drop = '{reason}' "
                f"ORDER BY _ord LIMIT {MAX_EXAMPLES}"
            )
            dropped[reason] = Counted(count, [self._example(o, d) for o, d in rows])
        [(total, added, present, repeats)] = self.st.sql(
            "SELECT count(*), count(*) FILTER (WHERE NOT _has_old), "
            "coalesce(sum(_n_new) FILTER (WHERE _has_old), 0), "
            "coalesce(sum(_n - 1) FILTER (WHERE NOT _has_old), 0) FROM final"
        )
        if repeats:
            same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM f.{c}" for c in EVENT_KEY)
            rows = self.st.sql(
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
        self.st.con.execute("DROP TABLE ev")
        if not total:
            raise DataContractError(
                f"no event is left to import: {summary(dropped)}. Fix: check the event times "
                "and that the events' item and sku ids are in the catalog files"
            )
        return dropped, {"total": int(total), "added": int(added), "present": int(present)}

    def _example(self, ord_: int, detail: str) -> str:
        file, row = self._where(ord_)
        return f"{file} row {row}: {detail}"

    def write_events(self, old_days: dict[date, tuple[int, int]]) -> list[date]:
        """One Parquet file per day with events, rows sorted by (time, user); a day whose rows
        equal the earlier import's keeps its file (a hard link). Returns the days."""
        per_day = {
            day: (int(n), int(h))
            for day, n, h in self.st.sql(
                f"SELECT CAST(event_timestamp AS DATE), count(*), {fingerprint_sql()} "
                "FROM final GROUP BY 1 ORDER BY 1"
            )
        }
        days = sorted(per_day)
        changed = [day for day in days if old_days.get(day) != per_day[day]]
        self.st.con.execute("CREATE TEMP TABLE changed (day DATE)")
        if changed:
            self.st.con.executemany("INSERT INTO changed VALUES (?)", [(d,) for d in changed])
        order = ", ".join(EVENT_KEY[-1:] + EVENT_KEY[:-1])
        columns = ", ".join(RAW_EVENTS.names)
        reader = self.st.con.sql(
            f"SELECT {columns} FROM final WHERE CAST(event_timestamp AS DATE) IN "
            f"(SELECT day FROM changed) ORDER BY {order}"
        ).to_arrow_reader(EVENT_BATCH_ROWS)
        rows = _Rows(reader)
        for day in progress(days, "event days"):
            target = day_file(self.st.settings, self.st.out, day)
            if day in changed:
                write_raw(rows.take(per_day[day][0]).combine_chunks(), "events", target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                _link(day_file(self.st.settings, self.st.settings.raw_dir, day), target)
        rows.finish()
        return days


def fingerprint_sql() -> str:
    """Order-free fingerprint of a day's rows: the sum of their hashes."""
    return f"sum(hash({', '.join(EVENT_KEY)}, material)::HUGEINT)"


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
