"""One DuckDB session that sees the whole workspace under stable view names.

`render(settings, catalog)` writes the CREATE VIEW statements for what is on disk now. The
copy `mmrec analyze views` saves as `data/analysis/views.sql` uses paths relative to the
workspace, for the plain `duckdb` CLI started in the workspace folder; `connect` renders
absolute paths (DuckDB resolves relative paths against the process's working directory
first, which in Python is not the workspace).

Views (each only when its files exist; DuckDB binds a view's files when it is created):

- `world`: `world_end`, the clock the world is "now" at (materialization end);
- raw world: `events`, `items`, `users`, `skus`, `item_labels`; `served_events`: the event
  log `POST /events` appends to (mmrec/event_log.py; every row, repeats of an id included);
- `offline_<source>`: every offline source folder (Feast batch sources, content outputs);
- `online_<view>`: the online-store export (`mmrec analyze views` writes it);
- `training_<name>`: each training set under `data/training/<name>/`;
- from the Feast registry: `feature_catalog` (view, join key, TTL), `feature_rows` (layer,
  view, entity, time of every stored row), `feature_nulls` (per-feature null and empty-list
  counts), `entity_universe` (every catalog entity by join key), `training_labels`.

Ids are the data's own: in a workspace whose users, items or SKUs have string ids
(mmrec/id_map.py), every view's `user_id`, `item_id` and `sku_id` column shows (and is
compared with) the string id, not the platform's key, and `entity_id` is text;
`<entity>_id_map` (id, key) holds the map, to read list columns that keep keys (`sku_ids`,
the click sequences) or to join on keys. `connect` registers the map from the workspace's
SQLite file; `mmrec analyze views` exports it as Parquet for the plain `duckdb` CLI.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from analysis import AnalysisError
from analysis.catalog import FeatureViewInfo
from mmrec.event_log import SEGMENT_SUFFIX, log_dir
from mmrec.id_map import STRING, IdMap, id_map_path, id_types
from mmrec.io import write_parquet
from mmrec.settings import Settings
from mmrec.world_manifest import NoWorldError, read_world_manifest, world_end

RAW_TABLES = ("items", "users", "skus", "item_labels")
ENTITY_TABLES = {"user_id": "users", "item_id": "items", "sku_id": "skus"}
ENTITY_OF = {"user_id": "user", "item_id": "item", "sku_id": "sku"}  # id column -> entity
_IDENTIFIER = re.compile(r"[^0-9a-zA-Z_]+")


def views_file(settings: Settings) -> Path:
    return settings.data_dir / "analysis" / "views.sql"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _path(settings: Settings, path: Path | str, relative: bool) -> str:
    """With `relative`, a path relative to the workspace when inside it; else absolute."""
    path = Path(path)
    if not relative:
        return path.as_posix()
    try:
        return path.relative_to(settings.workspace).as_posix()
    except ValueError:
        return path.as_posix()


def has_files(pattern: Path | str) -> bool:
    return bool(glob.glob(str(pattern)))


def _view(name: str, source_sql: str) -> str:
    return f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source_sql};"


def _parquet(
    settings: Settings, pattern: Path | str, relative: bool, strings: frozenset[str] = frozenset()
) -> str:
    """The files at `pattern` as a relation; the id columns of the `strings` entities show the
    data's ids (joined from `<entity>_id_map`)."""
    source = f"read_parquet({_quote(_path(settings, pattern, relative))}, union_by_name = true)"
    names = set(pq.read_schema(sorted(glob.glob(str(pattern)))[0]).names) if strings else set()
    columns = [c for c, entity in ENTITY_OF.items() if entity in strings and c in names]
    if not columns:
        return source
    shown = ", ".join(f"_{c}.id AS {c}" for c in columns)
    joins = " ".join(
        f"LEFT JOIN {ENTITY_OF[c]}_id_map AS _{c} ON _{c}.key = _t.{c}" for c in columns
    )
    return f"(SELECT _t.* REPLACE ({shown}) FROM {source} AS _t {joins})"


def string_entities(settings: Settings) -> frozenset[str]:
    """The entities whose ids are strings in this workspace's data (none before any data)."""
    try:
        kinds = id_types(read_world_manifest(settings))
    except NoWorldError:
        return frozenset()
    return frozenset(entity for entity, kind in kinds.items() if kind == STRING)


def id_map_file(settings: Settings, entity: str) -> Path:
    """The Parquet export of an entity's id map, for views.sql (`write`)."""
    return settings.data_dir / "analysis" / "ids" / f"{entity}.parquet"


def offline_sources(settings: Settings) -> list[str]:
    """Offline source folders with data (staging folders start with a dot and are skipped)."""
    root = settings.offline_dir
    if not root.is_dir():
        return []
    return sorted(
        folder.name
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".") and has_files(folder / "*/*.parquet")
    )


def online_views(settings: Settings) -> list[str]:
    folder = settings.data_dir / "analysis" / "online"
    return sorted(path.stem for path in folder.glob("*.parquet")) if folder.is_dir() else []


# training_sets/build.py writes data/training/<name>/split=<split>/part-*.parquet
TRAINING_PARTS = "split=*/*.parquet"


def training_sets(settings: Settings) -> dict[str, Path]:
    """Training sets by view-safe name: folders of `data/training/` holding Parquet files."""
    root = settings.data_dir / "training"
    if not root.is_dir():
        return {}
    return {
        _IDENTIFIER.sub("_", folder.name): folder
        for folder in sorted(root.iterdir())
        if folder.is_dir() and has_files(folder / TRAINING_PARTS)
    }


def label_columns(folder: Path) -> list[str]:
    """A training set's label columns: the manifest's `labels` list, else columns `label_*`."""
    columns = pq.read_schema(sorted(folder.glob(TRAINING_PARTS))[0]).names
    manifest = folder / "manifest.json"
    if manifest.exists():
        listed = json.loads(manifest.read_text()).get("labels")
        if isinstance(listed, list):
            names = [
                name if name in columns else f"label_{name}"
                for name in listed
                if isinstance(name, str)
            ]
            return [name for name in names if name in columns]
    return [name for name in columns if name.startswith("label_")]


def _world_end(settings: Settings) -> datetime | None:
    """The data's end, None before any data exists (the views still open)."""
    try:
        return world_end(settings)
    except NoWorldError:
        return None


def _struct(**fields: str) -> str:
    """A DuckDB struct literal `{'name': expression, ...}`."""
    return "{" + ", ".join(f"{_quote(name)}: {sql}" for name, sql in fields.items()) + "}"


def _unpivot_stats(layer: str, group: str, table: str, stats: dict[str, str]) -> str:
    """One scan of `table` computing a struct of counts per column, unpivoted to rows."""
    columns = ", ".join(f"{sql} AS {_ident(name)}" for name, sql in stats.items())
    return (
        f"SELECT {_quote(layer)} AS layer, {_quote(group)} AS grp, name, n_rows, stats "
        f"FROM (UNPIVOT (SELECT count(*) AS n_rows, {columns} FROM {table}) "
        "ON COLUMNS(* EXCLUDE n_rows) INTO NAME name VALUE stats)"
    )


def _union_view(name: str, selects: list[str]) -> list[str]:
    return (
        [f"CREATE OR REPLACE VIEW {name} AS\n  " + "\n  UNION ALL ".join(selects) + ";"]
        if selects
        else []
    )


def _catalog_views(
    settings: Settings,
    catalog: list[FeatureViewInfo],
    online: Iterable[str],
    relative: bool,
    strings: frozenset[str],
) -> list[str]:
    online = set(online)
    present = [info for info in catalog if has_files(info.source_path)]
    if not present:
        return []
    values = ", ".join(
        f"({_quote(i.name)}, {_quote(i.join_key)}, {i.ttl_s}, {len(i.features)})" for i in present
    )
    statements = [
        "CREATE OR REPLACE VIEW feature_catalog AS SELECT * FROM "
        f"(VALUES {values}) AS t(feature_view, join_key, ttl_s, n_features);"
    ]
    rows, nulls = [], []
    for info in present:
        layers = [("offline", _parquet(settings, info.source_path, relative, strings))]
        if info.name in online:
            layers.append(("online", f"online_{info.name}"))
        stats = {
            f.name: _struct(
                non_null=f"count({_ident(f.name)})",
                empty=f"count(*) FILTER (len({_ident(f.name)}) = 0)"
                if f.is_list
                else "NULL::BIGINT",
            )
            for f in info.features
        }
        for layer, table in layers:
            rows.append(
                f"SELECT {_quote(layer)} AS layer, {_quote(info.name)} AS feature_view, "
                f"{_entity_id(_ident(info.join_key), strings)} AS entity_id, event_timestamp "
                f"FROM {table} WHERE event_timestamp IS NOT NULL"
            )
            nulls.append(_unpivot_stats(layer, info.name, table, stats))
    statements += _union_view("feature_rows", rows)
    statements.append(
        "CREATE OR REPLACE VIEW feature_nulls AS SELECT layer, grp AS feature_view, "
        "name AS feature, n_rows, stats.non_null AS non_null, stats.empty AS empty FROM (\n  "
        + "\n  UNION ALL ".join(nulls)
        + ");"
    )
    return statements


def _entity_id(column: str, strings: frozenset[str]) -> str:
    """An entity column as `entity_id`: text when some entity's ids are strings (one type
    across users, items and SKUs)."""
    return f"CAST({column} AS VARCHAR)" if strings else column


def render(settings: Settings, catalog: list[FeatureViewInfo], relative: bool = False) -> str:
    """The CREATE VIEW script for what the workspace holds now (see the module docstring).
    With `relative` (views.sql), the id maps are read from their Parquet export (`write`);
    else the caller registers `<entity>_id_map` first (`connect`)."""
    lines = [
        "-- DuckDB views over an mmrec workspace, generated by `mmrec analyze views`.",
        "-- Paths are relative to the workspace: run from it, e.g.",
        "--   cd <workspace> && duckdb -init data/analysis/views.sql",
        "SET TimeZone = 'UTC';",
    ]
    strings = string_entities(settings)
    if relative:
        lines += [
            _view(f"{entity}_id_map", _parquet(settings, id_map_file(settings, entity), True))
            for entity in sorted(strings)
        ]
    end = _world_end(settings)
    if end is not None:
        lines.append(
            f"CREATE OR REPLACE VIEW world AS SELECT TIMESTAMPTZ {_quote(end.isoformat())} AS world_end;"
        )
    events = settings.raw_dir / "events" / "*" / "*.parquet"
    if has_files(events):
        lines.append(_view("events", _parquet(settings, events, relative, strings)))
    served = log_dir(settings) / "*" / f"*{SEGMENT_SUFFIX}"
    if has_files(served):
        lines.append(_view("served_events", _parquet(settings, served, relative, strings)))
    raw = [name for name in RAW_TABLES if (settings.raw_dir / f"{name}.parquet").exists()]
    lines += [
        _view(name, _parquet(settings, settings.raw_dir / f"{name}.parquet", relative, strings))
        for name in raw
    ]
    for source in offline_sources(settings):
        pattern = settings.offline_dir / source / "*" / "*.parquet"
        lines.append(_view(f"offline_{source}", _parquet(settings, pattern, relative, strings)))
    online = online_views(settings)
    for view in online:
        path = settings.data_dir / "analysis" / "online" / f"{view}.parquet"
        lines.append(_view(f"online_{view}", _parquet(settings, path, relative, strings)))
    sets = training_sets(settings)
    for name, folder in sets.items():
        lines.append(
            _view(
                f"training_{name}",
                _parquet(settings, folder / TRAINING_PARTS, relative, strings),
            )
        )
    lines += _catalog_views(settings, catalog, online, relative, strings)
    lines += _union_view(
        "entity_universe",
        [
            f"SELECT {_quote(key)} AS join_key, {_entity_id(key, strings)} AS entity_id "
            f"FROM {table}"
            for key, table in ENTITY_TABLES.items()
            if table in raw
        ],
    )
    labels = {name: label_columns(folder) for name, folder in sets.items()}
    selects = [
        _unpivot_stats(
            "training",
            name,
            f"training_{name}",
            {
                column.removeprefix("label_"): _struct(
                    labelled=f"count({_ident(column)})",
                    positives=f"sum({_ident(column)}::DOUBLE)",
                )
                for column in columns
            },
        )
        for name, columns in labels.items()
        if columns
    ]
    if selects:
        lines.append(
            "CREATE OR REPLACE VIEW training_labels AS SELECT grp AS training_set, name AS label, "
            "n_rows, stats.labelled AS labelled, stats.positives AS positives FROM (\n  "
            + "\n  UNION ALL ".join(selects)
            + ");"
        )
    return "\n".join(lines) + "\n"


def write(settings: Settings, catalog: list[FeatureViewInfo]) -> Path:
    """Save the rendered views as `data/analysis/views.sql` (for the plain duckdb CLI), with
    the id maps it reads as Parquet beside it."""
    for entity in string_entities(settings):
        write_parquet(IdMap(id_map_path(settings)).table(entity), id_map_file(settings, entity))
    path = views_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(settings, catalog, relative=True))
    return path


def connect(settings: Settings, catalog: list[FeatureViewInfo]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session with every view of the workspace defined, locked to the
    workspace's data: files outside `data/` cannot be read or written (no COPY TO, ATTACH,
    INSTALL or LOAD elsewhere; `enable_external_access` off), and the configuration is locked
    so no statement turns that back on. `analysis.queries.run_sql` also refuses every statement
    but SELECT and EXPLAIN, so nothing is written inside `data/` either."""
    con = duckdb.connect()
    try:
        for entity in string_entities(settings):  # the map as it is now (the service adds users)
            con.register(f"{entity}_id_map", IdMap(id_map_path(settings)).table(entity))
        con.execute(render(settings, catalog))
        folders = ", ".join(_quote(f"{folder}/") for folder in _read_folders(settings, catalog))
        con.execute(f"SET allowed_directories = [{folders}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as err:
        raise AnalysisError(
            f"cannot define the analysis views over {settings.workspace}: {err}"
        ) from None
    return con


def _read_folders(settings: Settings, catalog: list[FeatureViewInfo]) -> list[Path]:
    """The folders the views read: the workspace's data, and each registered offline source's
    folder (the part of its glob before the first wildcard; a registry may name files of
    another workspace)."""
    folders = {settings.data_dir}
    for info in catalog:
        parts = Path(info.source_path).parts
        fixed = next((k for k, part in enumerate(parts) if glob.has_magic(part)), len(parts))
        folders.add(Path(*parts[:fixed]))
    return sorted(folders)


def view_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        row[0]
        for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }
