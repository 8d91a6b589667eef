"""Online features of a feature service for one user and many candidate items.

Feast's `get_online_features` costs ~70 ms for 1 user x 500 items on SQLite or Redis here
(bench/feature_store_bench.py), mostly per-row Python work, so a request cannot read 500
candidates' item features that way. Item features only change when a batch is materialized
(pushes touch user sequences), so this reader keeps a per-process snapshot of the item views,
loaded through Feast itself, and reads user views from Feast per request. The first snapshot
loads before the first read; later ones load on a background thread once the current one is
older than `refresh_seconds`, and swap in whole: a request never waits for a reload (seconds
at 100k items). What other stages derive from a snapshot (the ranker's dense content table,
the popular fallback) is computed by `on_load` hooks on the same thread, before it swaps in.
Numeric list features (the 1,664 embedding floats of an item) are kept as one numpy array per
item, not Feast's Python lists: 864 MB for 104k items instead of 5.8 GB (the bench). On-demand
views run Feast's own transformation (the UDF in feature_repo/), so the values equal
`get_online_features` for the same rows: tests pin that.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.exceptions
from feast.errors import FeatureServiceNotFoundException
from feast.types import Float32, Float64, Int32, Int64

from mmrec.arrays import find_sorted
from mmrec.errors import UserError
from mmrec.feast_internals import (
    Value,
    int64_entity_key,
    online_provider,
    python_value,
    redis_client,
)
from mmrec.feast_store import ON_DEMAND, service_refs_by_entity
from mmrec.settings import DEFAULT_SNAPSHOT_REFRESH_S
from serving.snapshot_files import ItemColumns, Persisted, SnapshotFiles

log = logging.getLogger(__name__)
# The item snapshot a request reads throughout (`CandidateFeatureReader.pinned`), with its reader:
# a module-level variable, as contextvars asks, for any number of readers.
_PINNED: ContextVar[tuple[CandidateFeatureReader, ItemSnapshot] | None] = ContextVar(
    "pinned_item_snapshot", default=None
)

SNAPSHOT_CHUNK = 2_000
OLD_SNAPSHOT_WAIT_S = 5.0  # how long a reload waits for requests to let go of the old one
NUMPY_TYPES = {Float32: np.float32, Float64: np.float64, Int32: np.int32, Int64: np.int64}
# What the online stores raise when they cannot answer (Feast passes its backends' errors on):
# SQLite's (a missing, locked or broken file), Redis's (down, unreachable, slow, refused
# credentials: AuthenticationError is a ConnectionError). A request answers degraded on
# these; anything else is a bug and raises.
ONLINE_STORE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class OnlineFeatureError(UserError):
    """A request the reader cannot serve (unknown service, bad ids)."""


def fail_fast(store) -> None:
    """Make a Redis online store's client give up after one immediate retry.

    A request reads the online store on its own path, and a failed read is answered degraded
    (serving/pipeline.py), so waiting for Redis only delays the answer: redis-py's default
    policy retries 3 times with random backoffs of up to 2, 4 and 8 s (7 s on average); with
    it a degraded answer took 16.6 s while Redis was down (tests/test_serving_faults.py
    allows 3 s). One retry without backoff still replaces a pooled connection that died
    with a restarted server. Other online stores are left as they are."""
    if store.config.online_store.type != "redis":
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    redis_client(store).set_retry(Retry(NoBackoff(), 1))


def release_free_heap() -> None:
    """Return the C heap's free pages to the operating system (glibc's `malloc_trim`; a no-op
    on other C libraries).

    A snapshot reload builds the new snapshot while requests on other threads still use the
    old one; once the old one is freed, glibc keeps the freed pages, spread over the threads'
    arenas, as the process's own. Measured on the small world (6,100 items, 4 request threads,
    reloads on the background thread): RSS 627 -> 750-778 MB after the first reload and flat
    after, back to 626 MB after `malloc_trim(0)`. Neither MALLOC_ARENA_MAX=1/2 nor skipping
    gc.freeze changed it. Python has no call for this."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim from the symbols already loaded in this process, if any."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


@dataclass
class _ServiceLayout:
    """The feature service split by what each part is keyed on."""

    user_refs: list[str] = field(default_factory=list)  # "view:feature"
    item_refs: list[str] = field(default_factory=list)
    on_demand: list = field(default_factory=list)  # OnDemandFeatureView objects
    request_fields: list[str] = field(default_factory=list)
    item_arrays: dict[str, type] = field(default_factory=dict)  # numeric list feature -> dtype


@dataclass(frozen=True)
class ItemSnapshot:
    """The item features of the whole catalog at one load, aligned with the reader's item_ids
    plus one trailing None row, where unknown items point."""

    columns: ItemColumns
    loaded_at: float  # time.monotonic()
    version: int  # 1 for the first load, +1 for each reload
    derived: dict[str, Any] = field(default_factory=dict)  # what on_load hooks returned
    key: str | None = None  # the snapshot files' version (serving/snapshot_files.py), if any

    def column(self, name: str) -> np.ndarray:
        """One feature for the catalog, without the trailing row."""
        return self.columns[name][:-1]

    def retried(self) -> ItemSnapshot:
        """This snapshot, marked loaded now: a failed reload is tried again after another
        refresh period, not on every request."""
        return ItemSnapshot(self.columns, time.monotonic(), self.version, self.derived, self.key)


class CandidateFeatureReader:
    """Reads a feature service's values for (1 user, N items) rows.

    Args:
        store: a feast.FeatureStore (one per process).
        service: the feature service name, e.g. "ranking_v1" (the model records it).
        item_ids: every item that can be a candidate (the catalog), for the snapshot.
        refresh_seconds: how old the item snapshot may get before it is reloaded.
    """

    def __init__(
        self,
        store,
        service: str,
        item_ids: Sequence[int],
        refresh_seconds: float = DEFAULT_SNAPSHOT_REFRESH_S,
        files: SnapshotFiles | None = None,
    ) -> None:
        self.store = store
        self.files = files
        try:
            self.service = store.get_feature_service(service)
        except FeatureServiceNotFoundException as err:
            raise OnlineFeatureError(f"unknown feature service {service!r}: {err}") from None
        self.layout = self._split(self.service)
        self.item_ids = np.unique(np.asarray(item_ids, dtype=np.int64))
        self.refresh_seconds = refresh_seconds
        self._snapshot: ItemSnapshot | None = None
        self._first_load = threading.Lock()
        self._reloading = threading.Lock()  # held by the background reload while it runs
        self._reload_thread: threading.Thread | None = None
        self._hooks: dict[str, Callable[[ItemSnapshot], Any]] = {}
        self._persisted: dict[str, Persisted] = {}
        self._consumed: set[str] = set()

    def _split(self, service) -> _ServiceLayout:
        groups = service_refs_by_entity(self.store, service)
        odfv_refs = groups.pop(ON_DEMAND, [])
        unexpected = sorted(set(groups) - {"user", "item"})
        if unexpected:
            raise OnlineFeatureError(
                f"service {service.name} has views keyed on {unexpected}; expected user or item"
            )
        layout = _ServiceLayout(user_refs=groups.get("user", []), item_refs=groups.get("item", []))
        layout.item_arrays = self._numeric_lists(layout.item_refs)
        for view_name in dict.fromkeys(ref.split(":")[0] for ref in odfv_refs):
            view = self.store.get_on_demand_feature_view(view_name)
            layout.on_demand.append(view)
            for source in view.source_request_sources.values():
                layout.request_fields += [f.name for f in source.schema]
        return layout

    def _numeric_lists(self, refs: list[str]) -> dict[str, type]:
        """The numpy dtype of each numeric Array feature among `refs`."""
        out = {}
        for view_name in dict.fromkeys(ref.split(":")[0] for ref in refs):
            for feature in self.store.get_feature_view(view_name).features:
                base = getattr(feature.dtype, "base_type", None)
                if f"{view_name}:{feature.name}" in refs and base in NUMPY_TYPES:
                    out[feature.name] = NUMPY_TYPES[base]
        return out

    def _item_views(self) -> list[tuple[Any, list[str]]]:
        """(feature view, feature names) of every item view in the service."""
        names: dict[str, list[str]] = {}
        for ref in self.layout.item_refs:
            view, feature = ref.split(":", 1)
            names.setdefault(view, []).append(feature)
        return [(self.store.get_feature_view(view), features) for view, features in names.items()]

    def _load_snapshot(self, version: int) -> ItemSnapshot:
        """The current item features and what the hooks derive from them: from the online
        store, or with `files`, from the snapshot version's files (written first by whichever
        process needs them first: serving/snapshot_files.py)."""
        key = (
            None
            if self.files is None
            else self.files.key(self.store, self._item_views(), self.item_ids)
        )
        if key is None:
            snapshot = self._read_online(version)
            for name, hook in self._hooks.items():
                snapshot.derived[name] = hook(snapshot)
            snapshot.columns.drop(self._consumed)
            return snapshot
        current = self._snapshot
        if current is not None and current.key == key:  # nothing was materialized since
            return current.retried()
        with self.files.lock(key):
            if self.files.read(key) is None:
                online = self._read_online(version)
                arrays = {
                    f"{name}.{part}": array
                    for name, persisted in self._persisted.items()
                    for part, array in persisted.to_arrays(self._hooks[name](online)).items()
                }
                online.columns.drop(self._consumed)
                self.files.write(key, online.columns.table, arrays)
                del online, arrays
            arrays, table = self.files.read(key)
        snapshot = ItemSnapshot(
            ItemColumns(table, self.layout.item_arrays), time.monotonic(), version, key=key
        )
        for name, hook in self._hooks.items():
            if name in self._persisted:
                prefix = f"{name}."
                own = {k.removeprefix(prefix): a for k, a in arrays.items() if k.startswith(prefix)}
                snapshot.derived[name] = self._persisted[name].from_arrays(own)
            else:
                snapshot.derived[name] = hook(snapshot)
        return snapshot

    def _read_online(self, version: int) -> ItemSnapshot:
        """Read the item views for the whole catalog, into columns that a request indexes
        with numpy (a pandas reindex per column costs more than the read).

        Read with the online store's `online_read`, the call `get_online_features` makes
        underneath: the latter also builds a protobuf response and turns every one of the
        1,664 embedding floats per item into a Python object, 5.7x slower measured (55-76 s
        at 104k items). Values equal Feast's own reads (tests/test_serving_online_features.py).
        """
        provider = online_provider(self.store)  # Feast's own handle on the online store
        views = self._item_views()
        parts: dict[str, list] = {f: [] for _, features in views for f in features}
        for start in range(0, len(self.item_ids), SNAPSHOT_CHUNK):
            chunk = self.item_ids[start : start + SNAPSHOT_CHUNK]
            keys = [int64_entity_key("item_id", i) for i in chunk]
            for view, features in views:
                # a copy: the Redis store appends its timestamp key to the list it is given
                rows = provider.online_read(self.store.config, view, keys, list(features))
                for _, values in rows:
                    for name in features:
                        parts[name].append(self._python_value((values or {}).get(name), name))
        columns = ItemColumns.from_values(parts, self.layout.item_arrays)
        return ItemSnapshot(columns, time.monotonic(), version)

    def _python_value(self, value: Value | None, name: str) -> Any:
        """A stored value as get_online_features().to_dict() has it (numeric lists: numpy)."""
        if value is None or value.WhichOneof("val") is None:
            return None
        if name in self.layout.item_arrays:
            field = value.WhichOneof("val")
            return np.asarray(getattr(value, field).val, dtype=self.layout.item_arrays[name])
        return python_value(value)

    def on_load(
        self,
        name: str,
        hook: Callable[[ItemSnapshot], Any],
        consumes: Sequence[str] = (),
        persisted: Persisted | None = None,
    ) -> None:
        """Run `hook(snapshot)` on every snapshot before it is served, keeping its result in
        `snapshot.derived[name]`; runs now on the current snapshot if there is one (which
        must still hold the columns it consumes). `consumes`: columns only the hooks read,
        dropped from the snapshot once they ran (`read` no longer returns them): the 1,664
        embedding floats per item are 864 MB at 104k items, their projections far less.
        `persisted`: with snapshot files, the result is written once per snapshot version
        and every process maps it instead of running the hook (register before the first
        snapshot loads)."""
        self._hooks[name] = hook
        if persisted is not None:
            self._persisted[name] = persisted
        self._consumed.update(consumes)
        if self._snapshot is not None:
            self._snapshot.derived[name] = hook(self._snapshot)
            self._snapshot.columns.drop(consumes)

    @contextmanager
    def pinned(self) -> Iterator[ItemSnapshot]:
        """Inside, `snapshot()` (and so every read, hook result and `snapshot_name`) answers
        with the snapshot current on entry, in this thread or task only: one request's clock,
        item features and ranker item side come from one version even when a reload swaps
        in the next one meanwhile."""
        snapshot = self.snapshot()
        token = _PINNED.set((self, snapshot))
        try:
            yield snapshot
        finally:
            _PINNED.reset(token)

    def _pinned_snapshot(self) -> ItemSnapshot | None:
        """This reader's snapshot pinned by `pinned()` in this context, if any."""
        pinned = _PINNED.get()
        return pinned[1] if pinned is not None and pinned[0] is self else None

    def snapshot(self) -> ItemSnapshot:
        """The current item snapshot (the pinned one inside `pinned()`): loaded now if there
        is none; when it is older than refresh_seconds a background reload starts and this one
        is returned meanwhile."""
        pinned = self._pinned_snapshot()
        if pinned is not None:  # a reload is for the next request to start
            return pinned
        current = self._snapshot
        if current is None:
            with self._first_load:
                if self._snapshot is None:
                    self._snapshot = self._load_snapshot(version=1)
                    release_free_heap()  # the load's transient copies
                return self._snapshot
        stale = time.monotonic() - current.loaded_at > self.refresh_seconds
        if stale and self._reloading.acquire(blocking=False):
            self._reload_thread = threading.Thread(
                target=self._reload, name="item-snapshot", daemon=True
            )
            self._reload_thread.start()
        return current

    def _reload(self) -> None:
        """Load the next snapshot and swap it in; once requests have let go of the old one
        (they hold it for one request), give the freed memory back (`release_free_heap`).
        A failed load keeps the current snapshot and tries again after another
        refresh_seconds: the online store failing is logged, anything else (a bug) raises
        on this thread after that."""
        current = self._snapshot
        try:
            self._snapshot = self._load_snapshot(current.version + 1)
        except ONLINE_STORE_ERRORS:  # the online store is down or changing
            log.exception("item snapshot reload failed; serving version %d", current.version)
            self._snapshot = current.retried()
        except BaseException:
            self._snapshot = current.retried()
            self._reloading.release()
            raise
        try:
            old = weakref.ref(current)
            del current
            deadline = time.monotonic() + OLD_SNAPSHOT_WAIT_S
            while old() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            release_free_heap()
        finally:
            self._reloading.release()

    def wait_for_reload(self, timeout: float | None = None) -> None:
        """Block until a background reload that is running has finished (tests, shutdown)."""
        thread = self._reload_thread
        if thread is not None:
            thread.join(timeout)

    @property
    def snapshot_version(self) -> int:
        """The version of the current snapshot; 0 before the first load."""
        return 0 if self._snapshot is None else self._snapshot.version

    @property
    def snapshot_name(self) -> str:
        """What names the current snapshot's content: its files' version key, the same in every
        process serving those features; its load count (`snapshot_version`) without files."""
        current = self._pinned_snapshot() or self._snapshot
        if current is None:
            return "0"
        return current.key or str(current.version)

    def read_user(self, user_id: int) -> dict[str, list]:
        """The service's user features of one user, as get_online_features().to_dict()."""
        return self.store.get_online_features(
            features=self.layout.user_refs, entity_rows=[{"user_id": int(user_id)}]
        ).to_dict()

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row in a snapshot (the same in every snapshot: `item_ids` is fixed);
        unknown ids get the trailing None row."""
        rows, found = find_sorted(self.item_ids, ids)
        return np.where(found, rows, len(self.item_ids))

    def read(
        self,
        user_id: int,
        item_ids: Sequence[int],
        request: dict[str, int] | None = None,
        user: dict[str, list] | None = None,
    ) -> dict[str, list]:
        """Feature values for rows (user_id, item_ids[i]), keyed like get_online_features().to_dict().

        Unknown users or items read as None, as Feast's own reads do; numeric list features of
        items come as numpy arrays (Feast: lists of the same values). `user` is this user's
        `read_user` result when the caller already has it.
        """
        ids = np.asarray(item_ids, dtype=np.int64)
        missing = sorted(set(self.layout.request_fields) - set(request or {}))
        if missing:
            raise OnlineFeatureError(f"request fields {missing} are needed by the on-demand views")
        n = len(ids)
        user = self.read_user(user_id) if user is None else user
        out: dict[str, list] = {"user_id": [int(user_id)] * n, "item_id": ids.tolist()}
        for name, column in user.items():
            if name != "user_id":
                out[name] = column * n
        out.update(self.snapshot().columns.rows(self.positions(ids)))
        for name, value in (request or {}).items():
            out[name] = [value] * n
        for view in self.layout.on_demand:
            out.update(view.transform_dict(dict(out)))
        for name in request or {}:
            out.pop(name)
        return out
