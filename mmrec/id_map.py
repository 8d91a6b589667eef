"""The data's own ids and the platform's integer keys.

Every table the platform writes (raw events, features, training sets, the index) holds int64
keys, and they must be small dense integers: the models size their hashed ID tables from the
largest key (`models/recall_inputs.py:id_buckets`), so 63-bit hashes of the ids would not do.
Per entity (user, item, sku) the data's ids are either

- integers: they are the keys (identity: nothing is stored, nothing changes for integer data);
- strings (sha1 hashes, UUIDs, SKUs like `B07X-12`): each new id gets the next free key of its
  entity (0, 1, 2, ...), recorded here for good.

Which kind each entity has is decided by the first import that holds its ids and recorded in
the raw manifest (`id_types`, see `ingest/ids.py`); this module holds the map of the string
ones and turns ids into keys and back at the edges (the service, the feed, the CLI, the
analysis views).

Why one SQLite file (`data/id_map.sqlite3`): two kinds of writer assign keys, and they must
agree forever (one key per id, never a key twice): `mmrec data import` (every new id of an
import, in one transaction) and `POST /events` (a shopper the map has never seen, from any of
the service's worker processes at once). SQLite gives exactly that without a server:
`BEGIN IMMEDIATE` serialises writers across processes, (entity, id) and (entity, key) are
unique, and WAL with `synchronous = FULL` makes a committed key durable before it is answered.
The file lives outside `data/raw/` (which an import replaces whole) and an import adds to it in
place instead of swapping in a copy: a copy would lose the keys the service assigned while the
import ran. An import that fails after adding its ids leaves them mapped: the same ids get the
same keys next time, and nothing refers to them meanwhile.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.world_manifest import read_world_manifest

ID_MAP_FILE = "id_map.sqlite3"
ENTITIES = ("user", "item", "sku")
INT, STRING = "int", "string"  # an entity's id kind (the manifest's `id_types`)
ID_CHARS = 128  # a string id's length limit (a sha1 is 40 characters, a UUID 36)
MAX_INT_ID = 2**62  # an integer id: a non-negative int64 with room for the hashed tables
# control characters never belong in an id (and would hide in messages and logs)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,19}")
_CACHE = 200_000  # ids kept in memory per entity (cleared when full)
_SQL_VARIABLES = 500  # ids per `IN (...)` lookup


class UnknownIdError(UserError):
    """A value that cannot be an id of this workspace's entity; the message names the field."""


def id_map_path(settings: Settings) -> Path:
    return settings.data_dir / ID_MAP_FILE


def id_types(manifest: dict[str, Any]) -> dict[str, str | None]:
    """Each entity's id kind from a raw manifest: INT, STRING or None (no ids of it yet).
    Manifests without `id_types` (a generated world, an import from before string ids) hold
    integer ids."""
    recorded = manifest.get("id_types")
    if recorded is None:
        return dict.fromkeys(ENTITIES, INT)
    return {entity: recorded.get(entity) for entity in ENTITIES}


class IdMap:
    """The string ids of one workspace and their keys (module docstring). Thread-safe: each
    thread opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS ids (entity TEXT NOT NULL, id TEXT NOT NULL, "
                "key INTEGER NOT NULL, PRIMARY KEY (entity, id), UNIQUE (entity, key)) "
                "WITHOUT ROWID"
            )
            self._local.db = db
        yield db

    def add(self, entity: str, ids: Sequence[str]) -> int:
        """Give each of `ids` the map lacks the next free key of `entity`, in the order given,
        in one transaction; returns how many were new. Ids another writer added meanwhile
        keep the key they got."""
        if not ids:
            return 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (pos INTEGER, id TEXT)")
                db.execute("DELETE FROM wanted")
                db.executemany("INSERT INTO wanted VALUES (?, ?)", enumerate(ids))
                before = db.total_changes
                db.execute(
                    """INSERT INTO ids (entity, id, key)
                    SELECT ?1, id, (SELECT coalesce(max(key), -1) FROM ids WHERE entity = ?1)
                      + row_number() OVER (ORDER BY min(pos))
                    FROM wanted WHERE id NOT IN (SELECT id FROM ids WHERE entity = ?1)
                    GROUP BY id""",
                    (entity,),
                )
                added = db.total_changes - before
                db.execute("DELETE FROM wanted")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added

    def table(self, entity: str) -> pa.Table:
        """Every (id, key) of `entity`, as Arrow (id string, key int64)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, key FROM ids WHERE entity = ? ORDER BY key", (entity,)
            ).fetchall()
        return pa.table(
            {
                "id": pa.array([r[0] for r in rows], pa.string()),
                "key": pa.array([r[1] for r in rows], pa.int64()),
            }
        )

    def keys(self, entity: str, ids: Sequence[str]) -> dict[str, int]:
        """The keys of those of `ids` the map holds."""
        return dict(self._lookup("SELECT id, key FROM ids WHERE entity = ? AND id", entity, ids))

    def ids(self, entity: str, keys: Sequence[int]) -> dict[int, str]:
        """The ids of those of `keys` the map holds."""
        rows = self._lookup("SELECT key, id FROM ids WHERE entity = ? AND key", entity, keys)
        return dict(rows)

    def _lookup(self, query: str, entity: str, values: Sequence) -> list[tuple]:
        found: list[tuple] = []
        with self._db() as db:
            for start in range(0, len(values), _SQL_VARIABLES):
                chunk = list(values[start : start + _SQL_VARIABLES])
                marks = ", ".join("?" * len(chunk))
                found += db.execute(f"{query} IN ({marks})", [entity, *chunk]).fetchall()
        return found


@dataclass
class EntityIds:
    """One entity's ids as the data has them, turned into keys and back (the edges: request
    and response bodies, the event intake, the feed, the CLI options)."""

    entity: str
    kind: str | None  # INT, STRING, or None: no ids of it yet (integers are taken)
    id_map: IdMap
    _keys: dict[str, int] = field(default_factory=dict, repr=False)
    _ids: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def strings(self) -> bool:
        return self.kind == STRING

    def parse(self, value: object, name: str) -> int | str:
        """`value` as this entity's id: an int for integer ids (a string of digits is taken),
        the text for string ids (an integer is taken as its digits). UnknownIdError naming
        `name` for a value that cannot be one."""
        if isinstance(value, str):
            value = value.strip()
            if not value or len(value) > ID_CHARS or CONTROL.search(value):
                raise UnknownIdError(
                    f"{name}: {value[:40]!r} is not an id: give 1 to {ID_CHARS} characters "
                    "without control characters"
                )
        elif not isinstance(value, int) or isinstance(value, bool):
            raise UnknownIdError(f"{name}: {value!r} is not an id: give a string or an integer")
        if self.strings:
            return str(value)
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if isinstance(value, int) and 0 <= value <= MAX_INT_ID:
            return value
        raise UnknownIdError(
            f"{name}: {value!r} is not an id of this workspace: its {self.entity} ids are "
            f"integers from 0 to {MAX_INT_ID}"
        )

    def key(self, value: object, name: str, *, assign: bool = False) -> int | None:
        """The key of id `value` (see `parse`); None when the map does not hold it, unless
        `assign` gives it the next free key (durably, once across processes)."""
        parsed = self.parse(value, name)
        if not self.strings:
            return int(parsed)
        text = str(parsed)
        key = self._keys.get(text)
        if key is None:
            found = self.id_map.keys(self.entity, [text])
            if not found and assign:
                self.id_map.add(self.entity, [text])
                found = self.id_map.keys(self.entity, [text])
            if not found:
                return None
            self._remember(found)
            key = found[text]
        return key

    def external(self, key: int) -> int | str:
        """The data's own id of `key` (the key itself for integer ids)."""
        return self.externals([key])[0]

    def externals(self, keys: Sequence[int]) -> list[int | str]:
        """The data's own ids of `keys`; a key the map lacks (a bug, or a map from another
        workspace) raises KeyError."""
        if not self.strings:
            return [int(k) for k in keys]
        # read into a local dict: another thread may clear the cache meanwhile
        found = {int(k): self._ids.get(int(k)) for k in keys}
        missing = [k for k, own in found.items() if own is None]
        if missing:
            fetched = self.id_map.ids(self.entity, missing)
            self._remember({own: k for k, own in fetched.items()})
            found.update(fetched)
            if len(fetched) < len(missing):
                raise KeyError(
                    f"{self.entity} keys not in the id map: {sorted(set(missing) - set(fetched))[:5]}"
                )
        return [found[int(k)] for k in keys]

    def preload(self) -> None:
        """Read the entity's whole map now (a catalog: every answer names its items)."""
        if self.strings:
            table = self.id_map.table(self.entity)
            ids, keys = table["id"].to_pylist(), table["key"].to_pylist()
            self._remember(dict(zip(ids, keys, strict=True)))

    def _remember(self, found: dict[str, int]) -> None:
        if len(self._keys) + len(found) > max(_CACHE, len(found)):
            self._keys.clear()
            self._ids.clear()
        self._keys.update(found)
        self._ids.update({k: i for i, k in found.items()})


@dataclass(frozen=True)
class WorkspaceIds:
    """The user, item and SKU ids of one workspace."""

    user: EntityIds
    item: EntityIds
    sku: EntityIds

    @classmethod
    def load(cls, settings: Settings) -> WorkspaceIds:
        """From the workspace's raw manifest (`id_types`) and id map."""
        kinds = id_types(read_world_manifest(settings))
        id_map = IdMap(id_map_path(settings))
        return cls(*(EntityIds(entity, kinds[entity], id_map) for entity in ENTITIES))

    @property
    def any_strings(self) -> bool:
        return any(e.strings for e in (self.user, self.item, self.sku))
