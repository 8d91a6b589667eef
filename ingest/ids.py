"""The import's ids: integer ids kept as the platform's keys, string ids mapped to keys.

`readers.load` leaves every id column as text (VARCHAR; VARCHAR[] for `items.sku_ids`). Per
entity (user, item, sku; `ID_COLUMNS` lists the columns of each) the import then

1. decides the kind (`ImportIds.decide`): the workspace's, once an import recorded it in the
   manifest; else integers when every id of this import is a non-negative whole number that
   fits int64, strings otherwise. A workspace whose ids are integers refuses string ids
   (exit 2: import them into a new workspace, or start over with --replace); a workspace of
   string ids takes digits as strings;
2. turns the columns into BIGINT keys, in DuckDB: integers are their own keys
   (`to_integer_keys`, before the checks, so `1` and `1.0` are one id); string ids are added
   to the workspace's id map and joined with it (`to_string_keys`, after the checks, so a
   refused file adds nothing). Items get keys from the catalog only: an event's item the
   catalog lacks gets a negative placeholder (its event is dropped as unknown_item, and the
   message names the id through `<entity>_label`).

Tables carried over from the earlier import (`carried`: its skus and users, read back from
`data/raw/`) already hold keys.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from ingest.contract import CONTRACT_DOC, contract_error
from ingest.readers import Loaded, example, whole_number_sql
from mmrec.id_map import ENTITIES, INT, MAX_INT_ID, STRING, IdMap

# entity -> the (table, column) pairs holding its ids; the first of each gives new keys,
# and every column of users and SKUs does (an event may name a user or SKU nothing else
# lists), while an event's item must be in the catalog
ID_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "user": (("events", "user_id"), ("users", "user_id")),
    "item": (("items", "item_id"), ("events", "item_id")),
    "sku": (("skus", "sku_id"), ("items", "sku_ids"), ("events", "sku_id")),
}
NOT_KEYED = {("events", "item_id")}  # ids that must already have a key (the catalog's)
LIST_COLUMNS = {("items", "sku_ids")}
_MAX_EXAMPLES = 5


def _integer(x: str) -> str:
    """An integer id from id text (a whole number from 0 to MAX_INT_ID), else NULL."""
    whole = whole_number_sql(x)
    return f"CASE WHEN {whole} BETWEEN 0 AND {MAX_INT_ID} THEN {whole} END"


class ImportIds:
    """One import's id columns, in the loaded DuckDB tables (module docstring)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        loaded: dict[str, Loaded],
        carried: set[str],
        previous: dict[str, str | None] | None,
    ) -> None:
        self.con, self.loaded, self.carried = con, loaded, carried
        self.previous = previous or dict.fromkeys(ENTITIES)
        self.kinds: dict[str, str | None] = {}

    def _columns(self, entity: str) -> list[tuple[str, str]]:
        """The entity's (table, column) pairs of this import's files (not carried tables)."""
        return [
            (table, column)
            for table, column in ID_COLUMNS[entity]
            if table in self.loaded and table not in self.carried
        ]

    def _values(self, table: str, column: str, extra: str = "") -> str:
        """A query of the column's ids as `id` with `_fi`, `_row` (lists unnested)."""
        name = self.loaded[table].name
        if (table, column) in LIST_COLUMNS:
            return f"SELECT _fi, _row, unnest({column}) AS id{extra} FROM {name}"
        return f"SELECT _fi, _row, {column} AS id{extra} FROM {name} WHERE {column} IS NOT NULL"

    def decide(self) -> dict[str, str | None]:
        """Each entity's id kind (module docstring); DataContractError when string ids come
        into a workspace of integer ids."""
        for entity in ENTITIES:
            columns = self._columns(entity)
            counts = [
                self.con.execute(
                    f"SELECT count(*), count(*) FILTER ({_integer('id')} IS NULL) "
                    f"FROM ({self._values(table, column)})"
                ).fetchall()[0]
                for table, column in columns
            ]
            ids, non_integers = sum(n for n, _ in counts), sum(b for _, b in counts)
            kind = self.previous[entity]
            if kind == INT and non_integers:
                table, column = next(c for c, (_, b) in zip(columns, counts, strict=True) if b)
                self._refuse_strings(entity, table, column)
            if kind is None and ids:
                kind = STRING if non_integers else INT
            self.kinds[entity] = kind
        return self.kinds

    def _refuse_strings(self, entity: str, table: str, column: str) -> None:
        inputs = self.loaded[table].inputs
        query = self._values(table, column)
        rows = self.con.execute(
            f"SELECT _fi, _row, id, count(*) OVER () FROM ({query}) "
            f"WHERE {_integer('id')} IS NULL ORDER BY _fi, _row LIMIT {_MAX_EXAMPLES}"
        ).fetchall()
        raise contract_error(
            str(inputs.given),
            column,
            f"holds {entity} ids that are not integers, but this workspace's {entity} ids are "
            "integers (an earlier import's)",
            [example(inputs.name(fi), row, value) for fi, row, value, _ in rows],
            rows[0][3],
            "import data with string ids into a new workspace (`mmrec data import ... -w "
            "NEW_DIR`), or pass --replace to start this one over with the new ids "
            f"({CONTRACT_DOC})",
        )

    def to_integer_keys(self) -> None:
        """Integer ids (and the carried tables' keys) become BIGINT columns."""
        for entity in ENTITIES:
            for table, column in ID_COLUMNS[entity]:
                if table not in self.loaded:
                    continue
                if table in self.carried or self.kinds[entity] != STRING:
                    self._replace(table, column, _integer)

    def _replace(self, table: str, column: str, expression: Callable[[str], str]) -> None:
        """Column := expression(the value) (of each element, in a list column)."""
        name = self.loaded[table].name
        value = (
            f"list_transform({column}, lambda s: {expression('s')})"
            if (table, column) in LIST_COLUMNS
            else expression(column)
        )
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * REPLACE ({value} AS {column}) "
            f"FROM {name}"
        )

    def to_string_keys(self, id_map: IdMap) -> dict[str, int]:
        """String ids become their keys (new ones added to `id_map` first); every entity
        gets `map_<entity>` (id, key: this import's view of the map) and the macro
        `<entity>_label(key)` that names a key's id in messages. Returns the new keys per
        entity."""
        added = {}
        for entity in ENTITIES:
            mapped = f"map_{entity}"
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {mapped} (id VARCHAR, key BIGINT)")
            self.con.execute(
                f"CREATE OR REPLACE TEMP MACRO {entity}_label(k) AS coalesce((SELECT '''' || "
                f"any_value(id) || '''' FROM {mapped} WHERE key = k), CAST(k AS VARCHAR))"
            )
            if self.kinds[entity] != STRING:
                continue
            columns = self._columns(entity)
            self._load_map(id_map, entity)
            keyed = [c for c in columns if c not in NOT_KEYED]
            ids = " UNION ".join(f"SELECT id FROM ({self._values(*c)})" for c in keyed)
            new = self.con.execute(
                f"SELECT id FROM ({ids}) WHERE id NOT IN (SELECT id FROM {mapped}) ORDER BY id"
            ).fetchall()
            added[entity] = id_map.add(entity, [i for (i,) in new])
            if added[entity]:
                self._load_map(id_map, entity)
            for table, column in columns:
                if (table, column) in NOT_KEYED:  # ids the catalog lacks: placeholders
                    self.con.execute(
                        f"INSERT INTO {mapped} SELECT id, -row_number() OVER (ORDER BY id) FROM "
                        f"(SELECT DISTINCT id FROM ({self._values(table, column)}) "
                        f"WHERE id NOT IN (SELECT id FROM {mapped}))"
                    )
                self._join(table, column, mapped)
        return added

    def _load_map(self, id_map: IdMap, entity: str) -> None:
        self.con.register("id_map_arrow", id_map.table(entity))
        try:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE map_{entity} AS SELECT * FROM id_map_arrow"
            )
        finally:
            self.con.unregister("id_map_arrow")

    def _join(self, table: str, column: str, mapped: str) -> None:
        """Column := its ids' keys from `mapped` (every id there has one)."""
        name = self.loaded[table].name
        if (table, column) in LIST_COLUMNS:
            keys = (
                f"SELECT _fi, _row, list(m.key ORDER BY u.pos) AS keys FROM (SELECT _fi, _row, "
                f"unnest({column}) AS id, generate_subscripts({column}, 1) AS pos FROM {name}) u "
                f"JOIN {mapped} m USING (id) GROUP BY _fi, _row"
            )
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT t.* REPLACE (CASE WHEN "
                f"t.{column} IS NULL THEN NULL ELSE coalesce(k.keys, []::BIGINT[]) END AS "
                f"{column}) FROM {name} t LEFT JOIN ({keys}) k USING (_fi, _row)"
            )
            return
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT t.* REPLACE (m.key AS {column}) "
            f"FROM {name} t LEFT JOIN {mapped} m ON m.id = t.{column}"
        )
