"""The live way in: `POST /events` appends every event it accepts to the served-event log.

Rows follow the raw-data contract (docs/data-contract.md, the importer's rules): a content
event names a catalog item, a `sku_*` event a SKU (checked against the skus file when there
is one); `source`, `position` and `session_id` take the contract's defaults, `material` is the
item's, and each event has an `event_id` (the client's, else a new one). Where the log lives
and how the batch stages read it: mmrec/event_log.py.

- Durable before acknowledged: a request's new events are written as one Parquet segment per
  event day (temp file, fsync, rename, fsync of the folder) before `append` returns. On any
  write failure (disk full, unwritable folder) the segments of the request are removed and
  `EventLogUnavailable` says why: nothing is acknowledged that was not written.
- Retries: ids the log already holds (recorded in `event_ids.sqlite3` for DEDUPE_WINDOW) are
  not written again. A repeat that slips past (a crash between a segment and its ids, an id
  older than the window, the same id for two users at once) is dropped where the pipelines
  read the log.
- Concurrency: `EventLog.writing` serialises writers of the same users (docstring there).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.contract import CONTRACT_DOC, EVENTS, SKU_EVENT_TYPES, DataContractError, default
from mmrec.event_log import LOG_SCHEMA, SEGMENT_SUFFIX, day_dir, log_dir
from mmrec.settings import Settings

log = logging.getLogger(__name__)

DEDUPE_WINDOW = timedelta(days=7)  # how long a logged id is remembered at append time
LOCK_SHARDS = 64  # users hash to this many lock files
FUTURE_TOLERANCE_S = 300  # how far past the service clock an event time may be (clock skew)
IDS_FILE = "event_ids.sqlite3"
_SQL_VARIABLES = 500  # ids per `IN (...)` lookup


class EventLogUnavailable(Exception):
    """The event log cannot be written now (disk full, unwritable folder); nothing of the
    request was stored. The message says where and what failed."""


@dataclass(frozen=True)
class Catalog:
    """What an event may name: the catalog's items (with their material) and, when the data
    has a skus file, its SKUs (None: any SKU, as the importer does without one)."""

    materials: Mapping[int, str]
    skus: frozenset[int] | None

    @classmethod
    def load(cls, settings: Settings) -> Catalog:
        items = pq.read_table(settings.raw_dir / "items.parquet", columns=["item_id", "material"])
        ids, materials = items["item_id"].to_pylist(), items["material"].to_pylist()
        skus, skus_file = None, settings.raw_dir / "skus.parquet"
        if skus_file.exists():
            skus = frozenset(pq.read_table(skus_file, columns=["sku_id"])["sku_id"].to_pylist())
        return cls(dict(zip(ids, materials, strict=True)), skus or None)


def contract_rows(
    events: Sequence[Mapping[str, Any]], catalog: Catalog, now_s: int, logged_at: datetime
) -> pa.Table:
    """`events` (dicts of the request's fields, in order) as LOG_SCHEMA rows, one per event.

    Raises DataContractError naming the first offending event and field: an item missing from
    the catalog, a SKU missing from the skus file, a time after `now_s` (the service clock)
    plus FUTURE_TOLERANCE_S. Events without a time happen at `now_s`.
    """
    source, position = default(EVENTS.field("source")), default(EVENTS.field("position"))
    session = int(default(EVENTS.field("session_id")) or -1)
    rows = []
    for i, event in enumerate(events):
        content = event["event_type"] not in SKU_EVENT_TYPES
        item_id = event.get("item_id") if content else None
        if content and item_id not in catalog.materials:
            raise refused(
                i, "item_id", f"{item_id} is not in the catalog (data/raw/items.parquet)",
                "post events of catalog items, or import the item first (`mmrec data import`)",
            )  # fmt: skip
        sku_id = event.get("sku_id")
        if not content and catalog.skus is not None and sku_id not in catalog.skus:
            raise refused(
                i, "sku_id", f"{sku_id} is not in the skus file (data/raw/skus.parquet)",
                "post events of known SKUs, or import the SKU first (`mmrec data import`)",
            )  # fmt: skip
        ts = now_s if event.get("event_ts") is None else int(event["event_ts"])
        if ts > now_s + FUTURE_TOLERANCE_S:
            raise refused(
                i, "event_ts", f"{ts} is after the service clock ({_iso(now_s)})",
                "send unix seconds at or before now, or leave event_ts out to use the service "
                "clock (MMREC_SERVING_CLOCK=wall serves live data on the real clock)",
            )  # fmt: skip
        rows.append(
            {
                "user_id": event["user_id"],
                "item_id": item_id,
                "sku_id": sku_id,
                "event_type": event["event_type"],
                "source": event.get("source") or (source if content else None),
                "position": event.get("position") or (position if content else None),
                "material": catalog.materials[item_id] if content else None,
                "session_id": session if event.get("session_id") is None else event["session_id"],
                "watch_seconds": event.get("watch_seconds"),
                "event_timestamp": datetime.fromtimestamp(ts, UTC),
                "event_id": event.get("event_id") or uuid.uuid4().hex,
                "logged_at": logged_at,
            }
        )
    return pa.Table.from_pylist(rows, schema=LOG_SCHEMA)


def refused(index: int, field: str, problem: str, fix: str) -> DataContractError:
    return DataContractError(f"events[{index}].{field}: {problem}. Fix: {fix} ({CONTRACT_DOC}).")


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Appended:
    """What `EventLog.append` did with each row of its table, in order."""

    new: list[bool]  # False: the log already held this event_id (or an earlier row had it)
    segments: list[Path]

    @property
    def duplicates(self) -> int:
        return self.new.count(False)


class EventLog:
    """Appends to one workspace's served-event log (module docstring)."""

    def __init__(self, settings: Settings, dedupe_window: timedelta = DEDUPE_WINDOW) -> None:
        self.root = log_dir(settings)
        self.settings = settings
        self.dedupe_window = dedupe_window

    @contextmanager
    def writing(self, user_ids: Iterable[int]) -> Iterator[None]:
        """Hold the write locks of these users' shards (user_id % LOCK_SHARDS), in order.

        Each lock is `flock` on `locks/<shard>.lock`, taken on a descriptor this call opens.
        flock belongs to the open file description, so two holders exclude each other
        whether they are threads of one worker or different worker processes (all workers of
        a bento share this host and the workspace's filesystem); the kernel drops the lock
        when the descriptor closes, also when its process dies, so a crashed worker never
        leaves a user locked. Taking shards in ascending order makes a request for several
        users unable to deadlock with another. Whatever runs inside (the id check, the
        append, the online read-fold-write of the users' sequences) therefore sees no other
        writer of these users: no event is lost to an interleaved read-modify-write.
        It does not span hosts: for that, serialise per user in the shared store instead.
        """
        shards = sorted({int(u) % LOCK_SHARDS for u in user_ids})
        with ExitStack() as held:
            try:
                folder = self.root / "locks"
                folder.mkdir(parents=True, exist_ok=True)
                for shard in shards:
                    fd = os.open(folder / f"{shard:02d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                    held.callback(os.close, fd)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                raise self._unavailable("its write locks", err) from err
            yield

    def append(self, table: pa.Table, now: datetime | None = None) -> Appended:
        """Write the rows of `table` (LOG_SCHEMA) whose event_id the log does not hold yet;
        durable when this returns. Call it inside `writing` for the table's users.

        Raises EventLogUnavailable (nothing of `table` written) when the log cannot be
        written or its id record cannot be read.
        """
        now = now or datetime.now(UTC)
        ids = table["event_id"].to_pylist()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._ids() as db:
                known = self._known(db, ids)
        except (OSError, sqlite3.Error) as err:
            raise self._unavailable("its id record", err) from err
        new, seen = [], set(known)
        for event_id in ids:
            new.append(event_id not in seen)
            seen.add(event_id)
        fresh = table.filter(pa.array(new, pa.bool_()))
        segments = self._write_segments(fresh, now) if fresh.num_rows else []
        self._record(fresh["event_id"].to_pylist(), now)
        return Appended(new, segments)

    # -- the segments -------------------------------------------------------------------

    def _write_segments(self, table: pa.Table, now: datetime) -> list[Path]:
        """One synced segment per event day; all or none of them."""
        days = pc.strftime(table["event_timestamp"], format="%Y-%m-%d")
        name = f"{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        written: list[Path] = []
        try:
            for day in sorted(set(days.to_pylist())):
                rows = table.filter(pc.equal(days, day))
                folder = day_dir(self.settings, datetime.fromisoformat(day))
                written.append(_write_synced(rows, folder / name))
        except OSError as err:
            for path in written:  # acknowledge nothing of the request
                path.unlink(missing_ok=True)
            raise self._unavailable("a segment", err) from err
        return written

    # -- the id record ------------------------------------------------------------------

    @contextmanager
    def _ids(self) -> Iterator[sqlite3.Connection]:
        """The id record, opened per call (a connection is not shared between threads)."""
        db = sqlite3.connect(self.root / IDS_FILE, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS event_ids (event_id TEXT PRIMARY KEY, "
                "logged_at REAL NOT NULL) WITHOUT ROWID"
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_time ON event_ids (logged_at)")
            yield db
        finally:
            db.close()

    @staticmethod
    def _known(db: sqlite3.Connection, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), _SQL_VARIABLES):
            chunk = ids[start : start + _SQL_VARIABLES]
            marks = ", ".join("?" * len(chunk))
            rows = db.execute(f"SELECT event_id FROM event_ids WHERE event_id IN ({marks})", chunk)
            known.update(row[0] for row in rows)
        return known

    def _record(self, ids: list[str], now: datetime) -> None:
        """Remember `ids` (already written) and forget those older than the window. A failure
        here loses no event: the segments are in place, the read side drops a repeat."""
        try:
            with self._ids() as db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR IGNORE INTO event_ids VALUES (?, ?)",
                    [(event_id, now.timestamp()) for event_id in ids],
                )
                cutoff = (now - self.dedupe_window).timestamp()
                db.execute("DELETE FROM event_ids WHERE logged_at < ?", (cutoff,))
                db.execute("COMMIT")
        except (OSError, sqlite3.Error) as err:
            log.warning("event ids not recorded (the events are logged): %s", err)

    def _unavailable(self, what: str, err: BaseException) -> EventLogUnavailable:
        reason = getattr(err, "strerror", None) or str(err)
        return EventLogUnavailable(
            f"the event log at {self.root} cannot be written ({what}: {reason}); nothing of "
            "this request was stored, retry it later. Fix: free disk space or make the "
            "folder writable"
        )


def _write_synced(table: pa.Table, path: Path) -> Path:
    """Write `path` so that it is complete on disk when this returns: a synced temp file
    renamed into place, then the folder (and a new folder's parent) synced."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True)
        _sync(folder.parent)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync(folder)
    return path


def _sync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
