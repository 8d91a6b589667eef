"""Mixed ranking across material queues (the talk's Q2): each material's queue keeps the
ranker's order; slots go to the queue whose head adds the most expected list value, within
per-scene quotas.

Expected list value = sum over slots of position_discount(slot) * value(item). With
decreasing discounts and per-material caps, filling each slot with the best remaining head
that its cap allows maximizes it (an exchange argument: swapping any two placed items
toward the greedy order never lowers the sum), so a greedy merge is the exact solution here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mmrec.vocab import MATERIALS, POSITIONS, RANKING_TASKS

# The value of an impression as a weighted sum of the ranker's task probabilities.
DEFAULT_TASK_WEIGHTS: dict[str, float] = {
    "click": 1.0,
    "watch": 0.5,
    "share": 2.0,
    "comment": 1.5,
    "cart": 3.0,
    "favorite": 1.5,
}
# Max share of a list per material, by scene: the detail page leans to shop content.
DEFAULT_MIX_QUOTAS: dict[str, dict[str, float]] = {
    "home": {"video": 0.6, "live": 0.3, "shop": 0.3, "aggregated": 0.2},
    "inner": {"video": 0.7, "live": 0.3, "shop": 0.3, "aggregated": 0.2},
    "detail": {"video": 0.5, "live": 0.2, "shop": 0.5, "aggregated": 0.3},
}


@dataclass(frozen=True)
class MixConfig:
    task_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    quotas: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_MIX_QUOTAS)

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.task_weights) - set(RANKING_TASKS)):
            raise ValueError(f"task weights name unknown tasks {unknown}; use {RANKING_TASKS}")
        for scene, caps in self.quotas.items():
            if scene not in POSITIONS:
                raise ValueError(f"quota scene {scene!r} is not one of {POSITIONS}")
            bad = {m: c for m, c in caps.items() if m not in MATERIALS or not 0 < c <= 1}
            if bad:
                raise ValueError(
                    f"quotas for {scene} must map materials {MATERIALS} to (0, 1]: {bad}"
                )

    def restricted_to(self, scene: str, materials: Sequence[str]) -> MixConfig:
        """The config for a list of only `materials`: their caps scaled up so that together
        they can fill the list (shares between them stay those of the scene)."""
        caps = {m: c for m, c in self.quotas.get(scene, {}).items() if m in materials}
        total = sum(caps.values()) + sum(1.0 for m in materials if m not in caps)
        scaled = {m: min(1.0, c / min(1.0, total)) for m, c in caps.items()}
        return replace(self, quotas={**self.quotas, scene: scaled})


def item_values(task_probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Expected value per candidate: sum_t weight_t * p_t over the tasks the ranker scored
    (a data set without shares has no share task), (N,)."""
    scored = {t: w for t, w in weights.items() if t in task_probs}
    if not scored:
        raise ValueError(f"no task weight names a task the ranker scored ({sorted(task_probs)})")
    return sum(w * np.asarray(task_probs[t], dtype=np.float64) for t, w in scored.items())


def mix(
    item_ids: Sequence[int],
    materials: Sequence[str],
    values: np.ndarray,
    scene: str,
    k: int,
    config: MixConfig,
) -> list[int]:
    """Indexes into the candidates for a list of up to k items (fewer when quotas bind).

    Each material's queue is ordered by value, ties broken by input order, and keeps that
    order in the output.
    """
    if scene not in POSITIONS:
        raise ValueError(f"scene must be one of {POSITIONS}, got {scene!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not len(item_ids) == len(materials) == len(values):
        raise ValueError("item_ids, materials and values must have the same length")
    caps = config.quotas.get(scene, {})
    limit = {m: max(1, int(np.floor(caps.get(m, 1.0) * k))) for m in set(materials)}
    queues: dict[str, list[int]] = {}
    for index in np.argsort(-np.asarray(values), kind="stable"):
        queues.setdefault(materials[index], []).append(int(index))
    taken: dict[str, int] = dict.fromkeys(queues, 0)
    out: list[int] = []
    while len(out) < k:
        open_heads = [
            (values[q[0]], -q[0], m) for m, q in queues.items() if q and taken[m] < limit[m]
        ]
        if not open_heads:
            break
        _, _, material = max(open_heads)
        out.append(queues[material].pop(0))
        taken[material] += 1
    return out


def list_value(values: np.ndarray, order: Sequence[int]) -> float:
    """sum_slot value / log2(slot + 2): the objective `mix` maximizes."""
    return float(sum(values[i] / np.log2(slot + 2) for slot, i in enumerate(order)))
