"""The baseline policies a request can ask for (`RecommendRequest.policy`): A/B arms that the
bento serves beside its own pipeline.

`ranked` is the service itself (recall, the bento's ranker, mixed ranking). The baselines an
experiment compares it with come from the same process and the same item snapshot, so arms
differ by their policy only (a model arm is a bento of its own, built with another
MMREC_RANK_MODEL):

- `popular`: the catalog by clicks over the last 7 days (the snapshot's `clicks_7d`: the
  popular recall channel's ranking), the same list for everyone;
- `random`: the catalog in a random order, seeded by the user and the request time (the same
  request on the same clock gets the same answer).

Both drop the user's clicked items and keep the request's materials, as recall does.
"""

from __future__ import annotations

import numpy as np

from index.channels import RankedItems, RecallFilter, fallback_recall
from serving.recall import RecallStage
from serving.schemas import RecommendedItem

RANKED, POPULAR, RANDOM = "ranked", "popular", "random"


def baseline_items(
    recall: RecallStage, policy: str, filters: RecallFilter, k: int, seed: tuple[int, ...]
) -> list[RecommendedItem]:
    """The first `k` items of `policy`'s ranking of the catalog that pass `filters`; each
    item's channel is the policy's name, its score the policy's (7-day clicks, or 0)."""
    popular = recall.popular
    if policy == POPULAR:
        ranking = popular
    elif policy == RANDOM:
        order = np.random.default_rng(seed).permutation(len(popular.item_ids))
        ranking = RankedItems(
            popular.item_ids[order], popular.material_codes[order], np.zeros(len(order))
        )
    else:
        raise ValueError(f"no baseline policy {policy!r}: use {POPULAR} or {RANDOM}")
    found = fallback_recall(ranking, channel=policy, limit=k, filters=filters)
    materials = recall.material_of(np.array([c.item_id for c in found], dtype=np.int64))
    return [
        RecommendedItem(
            item_id=c.item_id,
            material=material,
            score=c.score,
            task_scores={},
            channel=policy,
            found_by=[policy],
        )
        for c, material in zip(found, materials, strict=True)
    ]
