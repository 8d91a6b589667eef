"""POST /events: fold new behaviour into the users' sequences and push them through Feast.

The batch pipeline (feature_pipelines/user_sequences.py) builds each sequence as the newest
SEQ_LENGTH events of its behaviour types, newest first. Here the same rule runs on the online
row: read the user's current sequences, put the new ids in front (newest first), keep
SEQ_LENGTH, and write the whole row through the `user_behavior_push` push source, so the next
request's features already hold the new clicks. Only the online store is written: the offline
history stays the batch pipeline's (it rebuilds from the raw event log).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pandas as pd

from feature_pipelines.user_sequences import SEQ_LENGTH, SEQUENCES
from serving.schemas import BehaviourEvent, EventsResponse

PUSH_SOURCE = "user_behavior_push"
SEQUENCE_VIEW = "user_behavior_seq"
# event type -> the sequences it extends
_SEQUENCES_OF: dict[str, list[str]] = defaultdict(list)
for _name, (_types, _) in SEQUENCES.items():
    for _type in _types:
        _SEQUENCES_OF[_type].append(_name)


def updated_sequences(
    current: dict[str, list[int] | None], events: list[BehaviourEvent]
) -> dict[str, list[int]]:
    """`current` sequences (newest first) with `events` (any order) folded in."""
    out = {name: list(current.get(name) or []) for name in SEQUENCES}
    for event in sorted(events, key=lambda e: e.event_ts or 0):
        target = event.sku_id if event.event_type.startswith("sku_") else event.item_id
        for name in _SEQUENCES_OF[event.event_type]:
            out[name] = [int(target), *out[name]][:SEQ_LENGTH]
    return out


def push_events(store, events: list[BehaviourEvent], now_ts: int) -> EventsResponse:
    """Apply `events` (validated) to the online sequences; events without a time get `now_ts`."""
    events = [
        e if e.event_ts is not None else e.model_copy(update={"event_ts": now_ts}) for e in events
    ]
    by_user: dict[int, list[BehaviourEvent]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    users = sorted(by_user)
    current = store.get_online_features(
        features=[f"{SEQUENCE_VIEW}:{name}" for name in SEQUENCES],
        entity_rows=[{"user_id": u} for u in users],
    ).to_dict()
    rows = []
    for i, user in enumerate(users):
        sequences = updated_sequences({n: current[n][i] for n in SEQUENCES}, by_user[user])
        newest = max(e.event_ts for e in by_user[user])
        rows.append(
            {"user_id": user, "event_timestamp": datetime.fromtimestamp(newest, UTC), **sequences}
        )
    from feast.data_source import PushMode

    store.push(PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
    return EventsResponse(users_updated=len(users), events=len(events))
