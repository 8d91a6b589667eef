"""Recall channels: vector recall (S2V, V2V, U2V), tag term recall, fresh/popular fallback.

Every channel returns `Candidate`s (item id, score, channel name), best first, after the same
`RecallFilter` (material types, already-seen items). Scores compare within a channel only;
`index.merge` combines channels by quota.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from index.collections import MAX_LIMIT, ContentIndex
from index.errors import DimensionMismatchError, InvalidContentError
from mmrec.vocab import MATERIALS, S2V, U2V, V2V


@dataclass(frozen=True, slots=True)
class Candidate:
    """One recalled item: which channel found it and that channel's score (higher is better)."""

    item_id: int
    score: float
    channel: str


@dataclass(frozen=True)
class RecallFilter:
    """Keep only `materials` (None: all) and drop `exclude_ids` (already-seen items)."""

    materials: tuple[str, ...] | None = None
    exclude_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.materials is not None:
            if isinstance(self.materials, str):
                object.__setattr__(self, "materials", (self.materials,))
            if bad := sorted(set(self.materials) - set(MATERIALS)):
                raise InvalidContentError(f"unknown material(s) {bad}; use some of {MATERIALS}")
        object.__setattr__(self, "exclude_ids", frozenset(int(i) for i in self.exclude_ids))

    def milvus_expr(self) -> str:
        """The filter as a Milvus boolean expression ('' when it keeps everything)."""
        parts = []
        if self.materials is not None:
            codes = sorted(MATERIALS.index(m) for m in set(self.materials))
            parts.append(f"material_code in {codes}")
        if self.exclude_ids:
            parts.append(f"item_id not in {sorted(self.exclude_ids)}")
        return " and ".join(parts)

    def keeps_nothing(self) -> bool:
        return self.materials is not None and len(self.materials) == 0

    def frame_mask(self, frame: pd.DataFrame) -> pd.Series:
        """Rows of a frame with item_id and material columns that pass the filter."""
        mask = ~frame["item_id"].isin(self.exclude_ids)
        if self.materials is not None:
            mask &= frame["material"].isin(self.materials)
        return mask


NO_FILTER = RecallFilter()


def check_limit(limit: int) -> int:
    if not isinstance(limit, int | np.integer) or not 0 <= limit <= MAX_LIMIT:
        raise InvalidContentError(f"limit must be an integer in 0..{MAX_LIMIT}, got {limit!r}")
    return int(limit)


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors as float32 (Q, dim); a single (dim,) vector becomes (1, dim)."""
    try:
        arr = np.asarray(queries, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InvalidContentError(f"query vectors must be a numeric (Q, d) array: {err}") from err
    if arr.ndim == 1 and arr.size:
        arr = arr[None, :]
    if arr.size == 0:
        return np.empty((0, dim), dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidContentError(f"query vectors must be (Q, d), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"query vectors have dimension {arr.shape[1]} but the index holds {dim}-d vectors; "
            "use the query tower that matches the index's embedding version"
        )
    if not np.isfinite(arr).all():
        raise InvalidContentError("query vectors contain NaN or infinity")
    return arr


def vector_recall(
    index: ContentIndex,
    channel: str,
    queries: np.ndarray,
    *,
    limit: int,
    filters: RecallFilter = NO_FILTER,
) -> list[Candidate]:
    """Top-`limit` items for a set of query vectors (Q, d), best first.

    Each query row searches for `limit` items; an item found by several rows keeps its best
    inner product. Empty `queries` (no seeds) or `limit` 0 gives []. Raises
    DimensionMismatchError when d differs from the index's dimension.
    """
    return multi_channel_recall(index, {channel: (queries, limit)}, filters=filters)[channel]


def ids_and_scores(row_hits, limit: int) -> Iterable[tuple[int, float]]:
    """(id, score) of one query's first `limit` hits. pymilvus 2.6 keeps them as two plain
    lists beside its per-hit dicts: reading those is ~10x faster than the dicts."""
    ids, scores = getattr(row_hits, "ids", None), getattr(row_hits, "distances", None)
    if ids is None or scores is None:
        return ((int(h["id"]), float(h["distance"])) for h in row_hits[:limit])
    return zip(ids[:limit], scores[:limit], strict=True)


# A query row of a channel: a vector (d,) to search, or its hits already known (the first
# `limit` that pass the request's filters, best first: index.neighbours' precomputed lists).
QueryRow = np.ndarray | list[tuple[int, float]]


def multi_channel_recall(
    index: ContentIndex,
    queries: Mapping[str, tuple[np.ndarray | Sequence[QueryRow], int]],
    *,
    filters: RecallFilter = NO_FILTER,
) -> dict[str, list[Candidate]]:
    """`vector_recall` of several channels {channel: (query rows, limit)} in ONE search.

    Query rows are a (Q, d) array, or a sequence mixing vectors and known hits (`QueryRow`).
    Same results as one `vector_recall` per channel (each vector row asks for the largest
    limit, each channel keeps its own `limit` best of each row, and an item found by several
    rows keeps its best score), in one round trip to Milvus instead of one per channel: the
    serving path calls this per request. No vector rows at all: no round trip.
    """
    rows = {channel: _rows(q, index.dim) for channel, (q, _) in queries.items()}
    limits = {channel: check_limit(limit) for channel, (_, limit) in queries.items()}
    out: dict[str, list[Candidate]] = {channel: [] for channel in queries}
    if filters.keeps_nothing():
        return out
    live = [(c, r) for c, rs in rows.items() if limits[c] for r in rs if isinstance(r, np.ndarray)]
    hits = []
    if live:
        stacked = np.stack([r for _, r in live])
        limit = max(limits[c] for c, _ in live)
        hits = iter(index.search(stacked, limit, filters.milvus_expr()))
    for channel, channel_rows in rows.items():
        limit = limits[channel]
        if not limit:
            continue
        best: dict[int, float] = {}
        for row in channel_rows:
            found = ids_and_scores(next(hits), limit) if isinstance(row, np.ndarray) else row
            for item, score in found:
                if score > best.get(item, -np.inf):
                    best[item] = score
        ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        out[channel] = [Candidate(item, score, channel) for item, score in ranked]
    return out


def _rows(queries: np.ndarray | Sequence[QueryRow], dim: int) -> list[QueryRow]:
    """A channel's query rows, vectors checked (`check_queries`), known hits as given."""
    if isinstance(queries, np.ndarray) or not any(isinstance(q, list) for q in queries):
        return list(check_queries(queries, dim))
    return [q if isinstance(q, list) else check_queries(q, dim)[0] for q in queries]


def s2v(
    index: ContentIndex,
    seed_sku_vectors: np.ndarray,
    *,
    limit: int,
    filters: RecallFilter = NO_FILTER,
) -> list[Candidate]:
    """SKU -> video: the S2V query tower's vectors of the user's recently clicked SKUs."""
    return vector_recall(index, S2V, seed_sku_vectors, limit=limit, filters=filters)


def v2v(
    index: ContentIndex,
    seed_video_vectors: np.ndarray,
    *,
    limit: int,
    filters: RecallFilter = NO_FILTER,
) -> list[Candidate]:
    """Video -> video: vectors of the user's recently watched items (see `seed_item_vectors`)."""
    return vector_recall(index, V2V, seed_video_vectors, limit=limit, filters=filters)


def u2v(
    index: ContentIndex, user_vectors: np.ndarray, *, limit: int, filters: RecallFilter = NO_FILTER
) -> list[Candidate]:
    """User -> video: the user tower's vector(s)."""
    return vector_recall(index, U2V, user_vectors, limit=limit, filters=filters)


def seed_item_vectors(index: ContentIndex, item_ids: Iterable[int]) -> np.ndarray:
    """Stored vectors (Q, d) of those seed items that are in the index, in the given order."""
    ids = [int(i) for i in item_ids]
    found = index.get_vectors(ids)
    rows = [found[i] for i in ids if i in found]
    return np.stack(rows) if rows else np.empty((0, index.dim), dtype=np.float32)


@dataclass(frozen=True)
class RankedItems:
    """A fixed ranking of the catalog (fresh or popular items), best first, one row per item,
    as arrays: `fallback_recall` reads a prefix of it per request instead of the catalog."""

    item_ids: np.ndarray  # (N,) int64
    material_codes: np.ndarray  # (N,) index into MATERIALS, -1 for anything else
    scores: np.ndarray  # (N,) float64

    @classmethod
    def from_frame(cls, ranked: pd.DataFrame) -> RankedItems:
        """From a table with item_id and material columns, best first; its `score` column is
        the score when present, else 1/(1+rank) so that order is kept. An item listed twice
        keeps its first (best) row."""
        if missing := {"item_id", "material"} - set(ranked.columns):
            raise InvalidContentError(f"ranked table lacks columns {sorted(missing)}")
        ids = ranked["item_id"].to_numpy(np.int64)
        if "score" in ranked.columns:
            scores = ranked["score"].to_numpy(np.float64)
        else:
            scores = 1.0 / (1.0 + np.arange(len(ranked)))
        codes = {m: i for i, m in enumerate(MATERIALS)}
        materials = np.fromiter((codes.get(m, -1) for m in ranked["material"]), np.int64)
        _, first = np.unique(ids, return_index=True)
        rows = np.sort(first)
        return cls(ids[rows], materials[rows], scores[rows])

    def top(self, limit: int, filters: RecallFilter) -> np.ndarray:
        """Rows of the first `limit` items that pass `filters`, in rank order."""
        keep_codes = (
            None
            if filters.materials is None
            else np.array([MATERIALS.index(m) for m in filters.materials], np.int64)
        )
        excluded = np.fromiter(filters.exclude_ids, np.int64, len(filters.exclude_ids))
        # scan a prefix that is long enough when the filter drops little; double it otherwise
        size = limit + len(excluded)
        while True:
            end = min(size, len(self.item_ids))
            mask = ~np.isin(self.item_ids[:end], excluded)
            if keep_codes is not None:
                mask &= np.isin(self.material_codes[:end], keep_codes)
            rows = np.flatnonzero(mask)
            if len(rows) >= limit or end == len(self.item_ids):
                return rows[:limit]
            size *= 2


def fallback_recall(
    ranked: RankedItems | pd.DataFrame,
    *,
    channel: str,
    limit: int,
    filters: RecallFilter = NO_FILTER,
) -> list[Candidate]:
    """The first `limit` items of an already ranked list (fresh or popular items) that pass.

    `ranked`: a RankedItems, or a table `RankedItems.from_frame` takes (serving builds the
    RankedItems once: a table would be scanned whole per request).
    """
    limit = check_limit(limit)
    if isinstance(ranked, pd.DataFrame):
        ranked = RankedItems.from_frame(ranked)
    if limit == 0 or filters.keeps_nothing():
        return []
    rows = ranked.top(limit, filters)
    return [
        Candidate(i, s, channel)
        for i, s in zip(ranked.item_ids[rows].tolist(), ranked.scores[rows].tolist(), strict=True)
    ]


def check_tags(tags: Collection[str] | None) -> list[str]:
    """Distinct non-empty tags, in order; a bare string is one tag."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    return list(dict.fromkeys(str(t) for t in tags if str(t)))
