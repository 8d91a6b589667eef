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
- Steps: `ingest/readers.py` loads and parses each table, `ingest/checks.py` checks what a
  column's type cannot, `ingest/ids.py` maps ids to keys, `ingest/event_rows.py` stages,
  drops and writes the events, `ingest/raw_catalog.py` the users, SKUs, items and media; they
  share one `ingest.staging.Staging`.
- Ids: integers or strings per entity; the raw layout holds integer keys, string ids mapped
  through the workspace's id map (`ingest/ids.py`, `mmrec/id_map.py`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psutil

from ingest.checks import check_event_ids, check_media_paths, check_unique
from ingest.contract import CONTRACT
from ingest.event_rows import FUTURE, EventRows
from ingest.ids import ImportIds
from ingest.import_report import ImportReport, check_strict
from ingest.movielens import write_movielens_contract
from ingest.raw_catalog import write_catalog, write_skus, write_users
from ingest.readers import InputFiles, discover, load, sql_string
from ingest.staging import Staging, midnight
from mmrec.errors import UserError
from mmrec.id_map import IdMap, id_map_path, id_types
from mmrec.io import building_folder, read_json, recover_folder, write_json
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


class WorkspaceHasDataError(UserError):
    """The raw folder holds data an import must not merge with (a generated world)."""


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
            check_strict(report.dropped, strict)
            return report

    spill = settings.data_dir / SPILL
    shutil.rmtree(spill, ignore_errors=True)
    try:
        with building_folder(settings.raw_dir) as out:
            con = _connect(spill)
            try:
                staging = Staging(con, settings, out, now or datetime.now(UTC))
                report, manifest = _build(staging, sources, carried, previous, strict)
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


def _build(
    st: Staging,
    sources: dict[str, InputFiles],
    carried: set[str],
    previous: dict[str, Any] | None,
    strict: bool,
) -> tuple[ImportReport, dict[str, Any]]:
    """Every step of one import into `st.out`; returns its report and manifest."""
    loaded = {
        table: load(st.con, files, CONTRACT[table], f"in_{table}")
        for table, files in sources.items()
    }
    ids = ImportIds(st.con, loaded, carried, id_types(previous) if previous else None)
    kinds = ids.decide()
    ids.to_integer_keys()
    for table, column in (("items", "item_id"), ("skus", "sku_id"), ("users", "user_id")):
        if table in loaded:
            check_unique(st, loaded[table], column)
    check_media_paths(st, loaded["items"])
    check_event_ids(st, loaded["events"])
    added = ids.to_string_keys(IdMap(id_map_path(st.settings)))
    events = loaded["events"]
    rows = EventRows(
        st, previous, {i: events.inputs.name(i) for i in range(len(events.inputs.files))}
    )
    rows.dimensions("skus" in loaded)
    old_days = rows.stage_events(events)
    dropped, counts = rows.drops()
    check_strict(dropped, strict)
    days = rows.write_events(old_days)
    start = midnight(days[0])
    n_users = write_users(st, start, "users" in loaded)
    media = write_catalog(st, loaded["items"], start)
    n_skus = write_skus(st, "skus" in loaded)
    by_type = dict(st.sql("SELECT event_type, count(*) FROM final GROUP BY 1 ORDER BY 1"))
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
    manifest = _manifest(st, days, n_users, n_skus, by_type, media)
    manifest["id_types"] = kinds
    return report, manifest


def _manifest(
    st: Staging,
    days: list[date],
    n_users: int,
    n_skus: int,
    by_type: dict[str, int],
    media: dict[str, Any],
) -> dict[str, Any]:
    categories = [c for (c,) in st.sql("SELECT DISTINCT category FROM catalog ORDER BY 1")]
    if n_skus:
        sku_categories = st.sql("SELECT DISTINCT category FROM in_skus ORDER BY 1")
        categories += [c for (c,) in sku_categories if c not in categories]
    materials = {m for (m,) in st.sql("SELECT DISTINCT material FROM catalog")}
    linked = st.one(
        "SELECT (SELECT count(*) FROM final WHERE sku_id IS NOT NULL) "
        "+ (SELECT count(*) FROM catalog WHERE len(sku_ids) > 0)"
    )
    return {
        "source": "import",
        "start": midnight(days[0]).isoformat(),
        "end": (midnight(days[-1]) + timedelta(days=1)).isoformat(),
        "days": [d.isoformat() for d in days],
        "n_users": n_users,
        "n_items": st.one("SELECT count(*) FROM catalog"),
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
