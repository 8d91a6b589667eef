"""The data's own ids at the service's edges (mmrec/id_map.py).

Requests name users, items and SKUs as the data does (integers, or strings such as sha1
hashes and SKUs like `B07X-12`); answers name them the same way. Between the two, the
pipeline (recall, features, ranking) works on the platform's integer keys. `ServedIds` turns
one into the other: a request's ids into keys, an answer's keys into ids, and a `POST /events`
batch into keyed events (a shopper the map has never seen gets a key there, once and for good,
whichever worker answers).

In an integer-id workspace every id is its own key: nothing is looked up, and the answers are
as they always were.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.event_log import refused
from mmrec.id_map import WorkspaceIds
from mmrec.settings import Settings
from serving.schemas import BehaviourEvent, RecommendRequest, RecommendResponse

# The key of a user the map has never seen (string ids): no key holds features, so the
# pipeline takes its cold-start path, as for an integer id with no history.
UNKNOWN_USER = -1


class ServedIds:
    """One service process's view of the workspace's ids (the item map read once: every
    answer names its items)."""

    def __init__(self, settings: Settings) -> None:
        self.ids = WorkspaceIds.load(settings)
        self.ids.item.preload()

    def keyed_request(self, request: RecommendRequest) -> RecommendRequest:
        """`request` with keys for its ids (UnknownIdError, a 400, for a value that cannot be
        an id here). An unknown user is UNKNOWN_USER; an unknown context SKU is left out (it
        has no features either way)."""
        user = self.ids.user.key(request.user_id, "user_id")
        sku = request.context_sku_id
        if sku is not None:
            sku = self.ids.sku.key(sku, "context_sku_id")
        return request.model_copy(
            update={"user_id": UNKNOWN_USER if user is None else user, "context_sku_id": sku}
        )

    def answer(self, request: RecommendRequest, response: RecommendResponse) -> RecommendResponse:
        """`response` (of the keyed request) with the data's ids: the request's user, each
        item's own id (and each candidate's, when asked for)."""
        items = self.ids.item.externals([item.item_id for item in response.items])
        candidates = response.candidate_ids
        return response.model_copy(
            update={
                "user_id": self.ids.user.parse(request.user_id, "user_id"),
                "items": [
                    item.model_copy(update={"item_id": own})
                    for item, own in zip(response.items, items, strict=True)
                ],
                "candidate_ids": None
                if candidates is None
                else self.ids.item.externals(candidates),
            }
        )

    def keyed_events(self, events: Sequence[BehaviourEvent]) -> list[BehaviourEvent]:
        """`events` with keys for their ids. Items and SKUs must be known (a 400 naming
        `events[i].item_id` / `sku_id` otherwise; integer ones are checked against the
        catalog by the intake); users are given keys when new, after every item and SKU
        passed, so a refused request assigns nothing."""
        keyed = []
        for i, event in enumerate(events):
            update = {}
            for name, entity, known in (
                ("item_id", self.ids.item, "in the catalog"),
                ("sku_id", self.ids.sku, "a SKU of the data"),
            ):
                value = getattr(event, name)
                if value is None:
                    continue
                key = entity.key(value, f"events[{i}].{name}")
                if key is None:
                    raise refused(
                        i, name, f"{value!r} is not {known}",
                        "post events of known ids, or import them first (`mmrec data import`)",
                    )  # fmt: skip
                update[name] = key
            keyed.append((event, update))
        return [
            event.model_copy(
                update={
                    **update,
                    "user_id": self.ids.user.key(
                        event.user_id, f"events[{i}].user_id", assign=True
                    ),
                }
            )
            for i, (event, update) in enumerate(keyed)
        ]

    def items(self, keys: Sequence[int]) -> list[int | str]:
        return self.ids.item.externals(keys)
