"""Request and response bodies of the service (pydantic: BentoML answers 400 when they fail)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_pipelines.user_sequences import SEQUENCES

Scene = Literal["home", "inner", "detail"]  # mmrec.vocab.POSITIONS
Material = Literal["video", "live", "shop", "aggregated"]  # mmrec.vocab.MATERIALS
# Behaviours that change a user's sequences (feature_pipelines/user_sequences.py)
SEQUENCE_EVENTS = tuple(t for types, _ in SEQUENCES.values() for t in types)
SequenceEvent = Literal[
    "click", "watch", "share", "comment", "favorite", "cart", "sku_click", "sku_cart",
    "sku_purchase",
]  # fmt: skip
if set(get_args(SequenceEvent)) != set(SEQUENCE_EVENTS):
    raise RuntimeError(f"SequenceEvent must list the sequence behaviours {SEQUENCE_EVENTS}")
MAX_ID = 2**62  # ids are int64 in the feature store


class RecommendRequest(BaseModel):
    """POST /recommend."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=0, le=MAX_ID, description="The shopper.")
    scene: Scene = Field(description="Where the list is shown: home, inner or detail.")
    context_sku_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="The product on screen (detail page), a S2V seed."
    )
    k: int = Field(20, ge=1, le=200, description="Items to return.")
    materials: list[Material] | None = Field(
        None, min_length=1, max_length=4, description="Only these material types (default all)."
    )


class RecommendedItem(BaseModel):
    item_id: int
    material: str
    score: float = Field(description="Expected value: task probabilities x mix weights.")
    task_scores: dict[str, float]
    channel: str = Field(description="The recall channel whose slot the item took.")
    found_by: list[str] = Field(description="Every channel that recalled the item.")


class RecommendResponse(BaseModel):
    user_id: int
    scene: Scene
    items: list[RecommendedItem]
    degraded: list[str] = Field(
        description="Parts that failed and were replaced by fallbacks (empty when none)."
    )
    cold_start: bool = Field(description="The user had no behaviour history online.")
    candidates: int = Field(description="Items recalled and ranked.")
    timings_ms: dict[str, float]
    models: dict[str, str]


class BehaviourEvent(BaseModel):
    """One behaviour: a content event carries item_id, a product-domain event sku_id."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=0, le=MAX_ID)
    event_type: SequenceEvent
    item_id: int | None = Field(None, ge=0, le=MAX_ID)
    sku_id: int | None = Field(None, ge=0, le=MAX_ID)
    event_ts: int | None = Field(
        None, ge=0, le=2**40, description="Unix seconds; default: the service clock."
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
    users_updated: int
    events: int
