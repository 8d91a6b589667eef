"""Checks of loaded contract tables that need more than a column's type: unique ids, media
paths that stay inside the items file's folder, the id each event type needs. Each raises a
DataContractError naming the file, the column, the first rows and the fix."""

from __future__ import annotations

from pathlib import Path

from ingest.contract import MAX_EXAMPLES, contract_error
from ingest.readers import Loaded, example
from ingest.staging import SKU_TYPES_SQL, Staging

MEDIA_COLUMNS = ("image", "frames")


def check_unique(st: Staging, table: Loaded, column: str) -> None:
    rows = st.sql(
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


def check_media_paths(st: Staging, items: Loaded) -> None:
    """Image and frame paths must name files inside the items file's folder: an absolute
    path, a `..` or a link leading out is refused before anything is read."""
    types = dict(st.sql(f"SELECT column_name, column_type FROM (DESCRIBE {items.name})"))
    folders = [path.parent.resolve() for path in items.inputs.files]
    for column in MEDIA_COLUMNS:
        if types[column] not in ("VARCHAR", "VARCHAR[]"):
            continue  # bytes, not paths
        rows = st.sql(
            f"SELECT _fi, _row, {column} FROM {items.name} WHERE {column} IS NOT NULL "
            "ORDER BY _fi, _row"
        )
        outside = []
        for fi, row, value in rows:
            escape = first_outside(folders[fi], [value] if isinstance(value, str) else value)
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


def check_event_ids(st: Staging, events: Loaded) -> None:
    """Content events need an item_id, sku_* events a sku_id."""
    for column, condition, kind in (
        ("item_id", f"NOT IN ({SKU_TYPES_SQL})", "content events"),
        ("sku_id", f"IN ({SKU_TYPES_SQL})", "sku_* events"),
    ):
        where = f"event_type {condition} AND {column} IS NULL"
        total = st.one(f"SELECT count(*) FROM {events.name} WHERE {where}")
        if total:
            rows = st.sql(
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


def first_outside(folder: Path, paths: list[str]) -> str | None:
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
