"""Request and response bodies of the service (pydantic: BentoML answers 400 when they fail)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from mmrec.id_map import ID_CHARS, MAX_INT_ID
from mmrec.vocab import EVENT_TYPES, SOURCES

Scene = Literal["home", "inner", "detail"]  # mmrec.vocab.POSITIONS
Material = Literal["video", "live", "shop", "aggregated"]  # mmrec.vocab.MATERIALS
Source = Literal["search", "rec"]  # mmrec.vocab.SOURCES
# What answers a request (serving/policies.py): an experiment arm's policy
Policy = Literal["ranked", "popular", "random"]
EventType = Literal[
    "impression", "click", "watch", "share", "comment", "cart", "favorite", "sku_click",
    "sku_cart", "sku_purchase",
]  # fmt: skip
if (get_args(EventType), get_args(Source)) != (EVENT_TYPES, SOURCES):
    raise RuntimeError(f"EventType and Source must list {EVENT_TYPES} and {SOURCES} (mmrec.vocab)")
MAX_ID = MAX_INT_ID  # integer ids are int64 keys in the feature store
# An id as the data has it (mmrec/id_map.py): an integer, or a string (a sha1, a UUID, a SKU
# like "B07X-12"); the service turns it into the platform's key and answers with it. Strict:
# a float, a bool or an object is refused (400 naming the field), not coerced.
EntityId = (
    Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
    | Annotated[StrictStr, Field(min_length=1, max_length=ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")]
)


class RecommendRequest(BaseModel):
    """POST /recommend."""

    model_config = ConfigDict(extra="forbid")

    user_id: EntityId = Field(
        description="The shopper, by the data's own id (an unknown one "
        "is a new shopper: the cold-start answer)."
    )
    scene: Scene = Field(description="Where the list is shown: home, inner or detail.")
    context_sku_id: EntityId | None = Field(
        None, description="The product on screen (detail page), a S2V seed; by its own id."
    )
    k: int = Field(20, ge=1, le=200, description="Items to return.")
    materials: list[Material] | None = Field(
        None, min_length=1, max_length=4, description="Only these material types (default all)."
    )
    policy: Policy = Field(
        "ranked",
        description="An experiment arm's policy: ranked (recall, this bento's ranker, mixed "
        "ranking; the default), popular (the catalog's most clicked items of the last 7 days) "
        "or random (uniform over the catalog). Clicked items and `materials` filter all three.",
    )
    include_candidates: bool = Field(
        False,
        description="Also answer with the ids of every recalled candidate (`candidate_ids`), "
        "e.g. to re-rank the same set offline; ranked policy only.",
    )

    @model_validator(mode="after")
    def _candidates_need_recall(self) -> RecommendRequest:
        if self.include_candidates and self.policy != "ranked":
            raise ValueError(
                f"include_candidates needs policy ranked: the {self.policy} policy recalls nothing"
            )
        return self


class RecommendedItem(BaseModel):
    item_id: int | str = Field(description="The item, by the data's own id.")
    material: str
    score: float = Field(description="Expected value: task probabilities x mix weights.")
    task_scores: dict[str, float]
    channel: str = Field(description="The recall channel whose slot the item took.")
    found_by: list[str] = Field(description="Every channel that recalled the item.")


class RecommendResponse(BaseModel):
    user_id: int | str = Field(description="The shopper, as the data names them.")
    scene: Scene
    items: list[RecommendedItem]
    degraded: list[str] = Field(
        description="Parts that failed and were replaced by fallbacks (empty when none)."
    )
    cold_start: bool = Field(description="The user had no behaviour history online.")
    candidates: int = Field(description="Items recalled and ranked.")
    timings_ms: dict[str, float]
    models: dict[str, str] = Field(
        description="What served the answer: the recall and ranking models' tags, the index "
        "collection, and the item snapshot version's key (item_snapshot: the same in every worker "
        "serving the same item features and clock)."
    )
    candidate_ids: list[int | str] | None = Field(
        None,
        description="Every recalled candidate, by the data's own ids, in recall order, when "
        "the request asked (include_candidates); null otherwise.",
    )


class BehaviourEvent(BaseModel):
    """One event, as the raw-data contract has it (docs/data-contract.md): a content event
    names a catalog item (`item_id`), a product-domain (`sku_*`) event a SKU (`sku_id`)."""

    model_config = ConfigDict(extra="forbid")

    user_id: EntityId = Field(description="The shopper (a new one gets a key).")
    event_type: EventType = Field(description="The behaviour; sku_* ones are about a SKU.")
    item_id: EntityId | None = Field(None, description="The content item (a catalog item_id).")
    sku_id: EntityId | None = Field(None, description="The SKU (sku_* events).")
    event_ts: int | None = Field(
        None, ge=0, le=2**40, description="Unix seconds, not after now; default: the service clock."
    )
    source: Source | None = Field(None, description="Traffic source; default rec (content events).")
    position: Scene | None = Field(None, description="Where it happened; default home (content).")
    session_id: int | None = Field(
        None, ge=-1, le=MAX_ID, description="The client's session; default -1 (sessions from gaps)."
    )
    watch_seconds: float | None = Field(
        None, ge=0, le=10**7, allow_inf_nan=False, description="Seconds watched (watch events)."
    )
    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="Deduplication key (printable ASCII): a retried POST with the same ids is "
        "stored once. Default: a new id, returned in the answer.",
    )

    @model_validator(mode="after")
    def _names_its_target(self) -> BehaviourEvent:
        key = "sku_id" if self.event_type.startswith("sku_") else "item_id"
        if getattr(self, key) is None:
            raise ValueError(f"a {self.event_type} event needs {key}")
        return self


class EventsRequest(BaseModel):
    """POST /events."""

    model_config = ConfigDict(extra="forbid")

    events: list[BehaviourEvent] = Field(min_length=1, max_length=1000)


class EventsResponse(BaseModel):
    events: int = Field(description="Events in the request; the event log holds every one.")
    appended: int = Field(description="Written by this request (not in the log before).")
    duplicates: int = Field(
        description="Already in the log (a retried event_id): not counted twice."
    )
    event_ids: list[str] = Field(description="Each event's id, in request order.")
    users_updated: int = Field(description="Users whose online sequences took new events.")
    degraded: list[str] = Field(
        description="Parts that failed (online_store: logged, reaches the online sequences at "
        "the next materialize); empty when none."
    )
