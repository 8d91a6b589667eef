"""The import's catalog side: users, SKUs, items (with their labels) and their media, written
as the raw layout the generator writes."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ingest.checks import MEDIA_COLUMNS
from ingest.contract import MAX_EXAMPLES, MEDIA_BYTES, MEDIA_PIXELS, RAW_ITEM_MEDIA, contract_error
from ingest.import_report import Counted
from ingest.readers import Loaded
from ingest.staging import MATERIAL_SQL, Staging, default_sql, write_raw
from mmrec.io import progress

MEDIA_BATCH = 1_024
UNKNOWN_CATEGORY = "unknown"  # an item with neither category nor tags
# Image formats the import decodes (and content/ later): PIL's others include EPS, which it
# renders through Ghostscript, and formats no catalog needs.
MEDIA_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def write_users(st: Staging, start: datetime, has_users: bool) -> int:
    if not has_users:
        st.con.execute(
            "CREATE TEMP TABLE in_users (user_id BIGINT, region VARCHAR, registered_at TIMESTAMPTZ)"
        )
    users = st.con.sql(
        f"""SELECT user_id,
          coalesce(nullif(trim(u.region), ''), {default_sql("users", "region")}) AS region,
          coalesce(u.registered_at, e.first_ts, TIMESTAMPTZ '{start.isoformat()}')
            AS registered_at
        FROM in_users u FULL OUTER JOIN (SELECT user_id, min(event_timestamp) AS first_ts
          FROM final GROUP BY user_id) e USING (user_id)
        ORDER BY user_id"""
    ).to_arrow_table()
    write_raw(users, "users.parquet", st.out / "users.parquet")
    return users.num_rows


def write_skus(st: Staging, has_skus: bool) -> int:
    query = (
        f"SELECT sku_id, category, coalesce(price, {default_sql('skus', 'price')}) AS price "
        "FROM in_skus ORDER BY sku_id"
        if has_skus
        else "SELECT NULL::BIGINT AS sku_id, NULL AS category, NULL::DOUBLE AS price LIMIT 0"
    )
    skus = st.con.sql(query).to_arrow_table()
    write_raw(skus, "skus.parquet", st.out / "skus.parquet")
    return skus.num_rows


def write_catalog(st: Staging, items: Loaded, start: datetime) -> dict[str, Any]:
    """items.parquet, item_labels.parquet and item_media.parquet (sorted by item_id);
    returns the media counts."""
    st.con.execute(
        f"""CREATE TEMP TABLE catalog AS
        SELECT i._fi, i._row, i.item_id, {MATERIAL_SQL.format(table="i")} AS material,
          coalesce(i.title, '') AS title,
          coalesce(nullif(trim(i.category), ''), i.tags[1], '{UNKNOWN_CATEGORY}')
            AS category,
          coalesce(i.sku_ids, []::BIGINT[]) AS sku_ids,
          coalesce(i.publish_ts, e.first_ts, TIMESTAMPTZ '{start.isoformat()}')
            AS publish_ts,
          coalesce(i.duration_s, {default_sql("items", "duration_s")}) AS duration_s,
          coalesce(i.tags, []::VARCHAR[]) AS tags, i.image, i.frames
        FROM {items.name} i LEFT JOIN (SELECT item_id, min(event_timestamp) AS first_ts
          FROM final WHERE item_id IS NOT NULL GROUP BY item_id) e USING (item_id)
        ORDER BY item_id"""
    )
    catalog = st.con.sql(
        "SELECT * EXCLUDE (image, frames), [category] || list_filter(tags, lambda t, k: "
        "t <> category AND list_position(tags, t) = k) AS category_tags, "
        "NULL::VARCHAR AS quality_label FROM catalog ORDER BY item_id"
    ).to_arrow_table()
    for name in ("items.parquet", "item_labels.parquet"):
        write_raw(catalog, name, st.out / name)
    return write_media(st, items)


def write_media(st: Staging, items: Loaded) -> dict[str, Any]:
    """Covers and frames, read from the paths (relative to the items file's folder) or
    bytes the items file gives; a missing or unreadable file leaves the row without it,
    an oversize one (MEDIA_BYTES, MEDIA_PIXELS) refuses the import, naming the rows."""
    folders = [path.parent for path in items.inputs.files]
    counts: dict[str, Any] = {"missing": Counted(), "unreadable": Counted()}
    counts |= {f"oversize_{column}": Counted() for column in MEDIA_COLUMNS}
    counts |= dict.fromkeys(MEDIA_COLUMNS, 0)
    n_items = st.one("SELECT count(*) FROM catalog")
    reader = st.con.sql(
        "SELECT _fi, _row, item_id, image, frames FROM catalog ORDER BY item_id"
    ).to_arrow_reader(MEDIA_BATCH)
    path = st.out / "item_media.parquet"
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
                f"holds images over the limits ({MEDIA_BYTES} bytes a file, {MEDIA_PIXELS} pixels)",
                oversize.examples,
                oversize.count,
                "shrink or re-encode those images, or leave them out",
            )
    return counts


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
