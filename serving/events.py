"""POST /events: log every accepted event durably, then fold it into the users' online sequences.

Per request (`EventIntake.accept`):
0. turn the events' ids (the data's own: integers or strings) into the platform's keys
   (serving/ids.py): an unknown item or SKU is a 400 naming the field, a new shopper gets a key;
1. check the events against the raw-data contract and the catalog (ingest/event_log.py): an
   unknown item or SKU, or a time after the service clock, is a 400 naming the field;
2. under the write locks of the request's users (`EventLog.writing`: flock per user shard,
   across threads and worker processes), drop the event_ids the log already holds (a retry),
   append the rest to the event log, fsync'd before anything else happens (a failed write
   answers 503 and acknowledges nothing), then fold the new events into each user's online
   sequences and push the rows through Feast;
3. answer with every event's id (a client retries with them).

The log is what the batch pipelines read beside the raw events (mmrec/event_log.py), so the
next `mmrec features materialize` (which first folds new log days into the offline sources)
keeps these events in the sequences and the next training set holds them.

The fold is the batch pipeline's rule, in one place (feature_pipelines/user_sequences.py):
the newest SEQ_LENGTH events of each sequence's behaviour types, however old, newest first.
The push is `PushMode.ONLINE`, not `ONLINE_AND_OFFLINE`: Feast 0.67's offline write to this
FileSource fails (it opens the source's path, a glob over month partitions, as one file:
FileNotFoundError), and its
file/DuckDB append would re-read and rewrite the whole source per push, without fsync or any
guard against two workers appending at once; it would also store derived sequence rows, which
the next `features build` recomputes, not the events that training sets are labelled from.
The event log is the offline record; the pipelines derive the offline sequences from it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from feature_pipelines.user_sequences import SEQUENCES, SEQUENCES_OF, fold_sequences
from ingest.event_log import Catalog, EventLog, contract_rows
from mmrec.settings import Settings
from serving.ids import ServedIds
from serving.schemas import BehaviourEvent, EventsResponse

log = logging.getLogger(__name__)

PUSH_SOURCE = "user_behavior_push"
SEQUENCE_VIEW = "user_behavior_seq"
ONLINE_STORE = "online_store"  # the degraded part named in responses


def updated_sequences(
    current: dict[str, list[int] | None], events: list[BehaviourEvent]
) -> dict[str, list[int]]:
    """`current` sequences (newest first) with `events` (any order) folded in, by the batch
    pipeline's rule (feature_pipelines.user_sequences.fold_sequences)."""
    return fold_sequences(
        current,
        [
            (
                e.event_type,
                e.sku_id if e.event_type.startswith("sku_") else e.item_id,
                e.event_ts or 0,
            )
            for e in events
        ],
    )


def push_events(store, events: list[BehaviourEvent]) -> int:
    """Fold `events` (each with its event_ts) into their users' online sequences and push
    the rows; returns the users updated. Run it under `EventLog.writing` for these users:
    it reads, folds and writes each row (a read-modify-write)."""
    by_user: dict[int, list[BehaviourEvent]] = defaultdict(list)
    for event in events:
        if SEQUENCES_OF[event.event_type]:  # impressions extend no sequence
            by_user[event.user_id].append(event)
    if not by_user:
        return 0
    from feast.data_source import PushMode

    from mmrec.feast_internals import TIMESTAMP_POSTFIX

    users = sorted(by_user)
    current = store.get_online_features(
        features=[f"{SEQUENCE_VIEW}:{name}" for name in SEQUENCES],
        entity_rows=[{"user_id": u} for u in users],
    ).to_dict(include_event_timestamps=True)
    rows = []
    for i, user in enumerate(users):
        sequences = updated_sequences({n: current[n][i] for n in SEQUENCES}, by_user[user])
        # Feast's Redis store keeps a row only when its time is later than the stored row's
        # (seconds here): a later push within the same second would be dropped.
        stored = max(current[f"{n}{TIMESTAMP_POSTFIX}"][i] or 0 for n in SEQUENCES)
        newest = max(max(e.event_ts for e in by_user[user]), stored + 1)
        rows.append(
            {"user_id": user, "event_timestamp": datetime.fromtimestamp(newest, UTC), **sequences}
        )
    store.push(PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
    return len(users)


class EventIntake:
    """What POST /events does (module docstring), for one service process."""

    def __init__(
        self, settings: Settings, store, now: Callable[[], int], ids: ServedIds | None = None
    ) -> None:
        self.store = store
        self.now = now  # the service clock, unix seconds
        self.log = EventLog(settings)
        self.catalog = Catalog.load(settings)
        self.ids = ids or ServedIds(settings)

    def accept(self, events: list[BehaviourEvent]) -> EventsResponse:
        """Log and push `events` (ids as the data has them). Raises a UserError (a 400:
        DataContractError, UnknownIdError) before writing anything, EventLogUnavailable (a
        503) when the log cannot be written."""
        events = self.ids.keyed_events(events)
        now = self.now()
        table = contract_rows(
            [e.model_dump() for e in events], self.catalog, now, datetime.now(UTC)
        )
        ids = table["event_id"].to_pylist()
        stamped = [
            e.model_copy(update={"event_ts": now if e.event_ts is None else e.event_ts})
            for e in events
        ]
        degraded = []
        with self.log.writing({e.user_id for e in events}):
            appended = self.log.append(table)
            fresh = [e for e, new in zip(stamped, appended.new, strict=True) if new]
            try:
                users = push_events(self.store, fresh)
            except Exception as err:  # any online-store error: the events are logged already
                log.warning("online push failed, events logged: %s", err)
                users, degraded = 0, [ONLINE_STORE]
        return EventsResponse(
            events=len(events),
            appended=len(fresh),
            duplicates=appended.duplicates,
            event_ids=ids,
            users_updated=users,
            degraded=degraded,
        )
