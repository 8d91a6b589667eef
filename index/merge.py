"""Merge channel results: per-channel quotas, dedupe, and which channel(s) found each item."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from index.channels import Candidate
from index.errors import InvalidContentError


@dataclass(frozen=True)
class MergedCandidate:
    """An item after merging: the channel whose slot it took, its score there, all finders."""

    item_id: int
    score: float
    channel: str
    found_by: tuple[str, ...]


def merge_channels(
    results: Mapping[str, Sequence[Candidate]],
    quotas: Mapping[str, int],
    total: int | None = None,
) -> list[MergedCandidate]:
    """One deduplicated list from per-channel candidate lists (each best first).

    Channels are visited in `quotas` order; each admits up to its quota of its best items not
    admitted yet. If `total` is given and slots remain, the leftovers of all channels fill them
    round-robin (channels without a quota take part only here). `found_by` lists every channel
    that returned the item, in `quotas` order then the rest. Output is in admission order,
    truncated to `total`.
    """
    if bad := {c: q for c, q in quotas.items() if q < 0}:
        raise InvalidContentError(f"quotas must be >= 0, got {bad}")
    if total is not None and total < 0:
        raise InvalidContentError(f"total must be >= 0, got {total}")
    order = [*quotas, *(c for c in results if c not in quotas)]
    found_by: dict[int, list[str]] = {}
    for channel in order:
        for cand in results.get(channel, ()):
            finders = found_by.setdefault(cand.item_id, [])
            if channel not in finders:
                finders.append(channel)
    admitted: dict[int, tuple[str, Candidate]] = {}
    queues = {c: deque(results.get(c, ())) for c in order}
    for channel, quota in quotas.items():
        queue, taken = queues[channel], 0
        while queue and taken < quota:
            cand = queue.popleft()
            if cand.item_id not in admitted:
                admitted[cand.item_id] = (channel, cand)
                taken += 1
    while total is not None and len(admitted) < total and any(queues.values()):
        for channel in order:
            queue = queues[channel]
            while queue and queue[0].item_id in admitted:
                queue.popleft()
            if queue and len(admitted) < total:
                cand = queue.popleft()
                admitted[cand.item_id] = (channel, cand)
    merged = [
        MergedCandidate(c.item_id, c.score, channel, tuple(found_by[c.item_id]))
        for channel, c in admitted.values()
    ]
    return merged if total is None else merged[:total]
