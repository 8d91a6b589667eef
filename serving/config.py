"""What the recommendation service loads and how much each stage does, from the settings.

`mmrec.settings.Settings` reads them from the environment (all optional): MMREC_RECALL_MODEL / MMREC_RANK_MODEL (BentoML model
tags, default "<name>:latest"), MMREC_SERVING_CLOCK ("world": requests happen at the end of
the generated world's data, so item ages match what the models trained on; "wall": the real
clock, for live data), MMREC_CANDIDATES (items ranked per request), MMREC_CHANNEL_QUOTAS (JSON
{channel: candidates}, merged over the defaults), MMREC_MIX_QUOTAS (JSON {scene: {material:
max share of the list}}, replacing a scene's defaults), MMREC_SNAPSHOT_REFRESH_S (seconds
before the item-feature snapshot is reloaded in the background). Where the features and the
index live comes from `mmrec.settings.Settings` (MMREC_WORKSPACE, MMREC_ONLINE_STORE,
MMREC_REDIS_URL) and MMREC_MILVUS_URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmrec.settings import DEFAULT_SNAPSHOT_REFRESH_S, Settings, SettingsError
from mmrec.vocab import (
    FRESH,
    LATEST_RANKING_MODEL,
    LATEST_RECALL_MODEL,
    POPULAR,
    S2V,
    TERM,
    U2V,
    V2V,
)
from serving.mixing import MixConfig

CLOCKS = ("world", "wall")
# Candidates each channel admits before the merge fills the rest round-robin: vector channels
# first (personal), then tags, then the fallbacks that always answer.
DEFAULT_CHANNEL_QUOTAS: dict[str, int] = {
    U2V: 150, V2V: 150, S2V: 100, TERM: 60, FRESH: 20, POPULAR: 20,
}  # fmt: skip


@dataclass(frozen=True)
class ServingConfig:
    """Models, clock and stage sizes of one service process."""

    # BentoML model tags, or the stored models a bento's service resolved them to
    recall_model: Any = LATEST_RECALL_MODEL
    rank_model: Any = LATEST_RANKING_MODEL
    clock: str = "world"
    candidates: int = 500  # items ranked per request (the merge's total)
    quotas: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CHANNEL_QUOTAS))
    seed_items: int = 5  # newest clicked items used as V2V seeds
    seed_skus: int = 5  # newest clicked SKUs used as S2V seeds (after the context SKU)
    interest_tags: int = 3  # top CDR categories used as term-recall tags
    snapshot_refresh_s: float = DEFAULT_SNAPSHOT_REFRESH_S  # how old the item snapshot may get
    # How often the index alias is re-resolved. A resolve is a strongly consistent Milvus
    # query (~300 ms in milvus-lite): at 1 s it was the p99 of recall. A dropped collection
    # is re-resolved at once anyway (index.collections.ContentIndex).
    index_refresh_s: float = 30.0
    mix: MixConfig = field(default_factory=MixConfig)

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise SettingsError(f"MMREC_SERVING_CLOCK must be one of {CLOCKS}, got {self.clock!r}")
        if not self.snapshot_refresh_s > 0:
            raise SettingsError(
                f"MMREC_SNAPSHOT_REFRESH_S must be > 0 seconds, got {self.snapshot_refresh_s}"
            )
        if not 1 <= self.candidates <= 5000:
            raise SettingsError(f"MMREC_CANDIDATES must be in 1..5000, got {self.candidates}")
        if bad := {
            c: q
            for c, q in self.quotas.items()
            if c not in DEFAULT_CHANNEL_QUOTAS or not isinstance(q, int) or q < 0
        }:
            raise SettingsError(
                f"channel quotas must name {list(DEFAULT_CHANNEL_QUOTAS)} with q >= 0: {bad}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingConfig:
        """The serving part of the settings, checked (module docstring)."""
        try:
            mix = MixConfig(quotas={**MixConfig().quotas, **settings.mix_quotas})
        except (ValueError, TypeError, AttributeError) as err:
            raise SettingsError(f"MMREC_MIX_QUOTAS: {err}") from err
        return cls(
            recall_model=settings.recall_model,
            rank_model=settings.rank_model,
            clock=settings.serving_clock,
            candidates=settings.candidates,
            snapshot_refresh_s=settings.snapshot_refresh_s,
            quotas={**DEFAULT_CHANNEL_QUOTAS, **settings.channel_quotas},
            mix=mix,
        )
