"""Term recall on tags: items sharing the most tags with the user's interest tags.

Two implementations of one contract, measured by bench/term_recall_bench.py (which also
measures the same inverted table in DuckDB SQL):
- `TagIndex`: an in-process inverted index (tag -> item rows, numpy postings): the default,
  1.5 ms p50 at 100k items, the only one inside the 5 ms budget (index/README.md);
- `milvus_term_recall`: Milvus `array_contains(tags, ...)` filters, one query per tag,
  ranked client-side; ~120x slower at 100k, and a tag matching more than MAX_LIMIT items
  is cut to an arbitrary subset of them (Milvus `query` has no ORDER BY).
Both: score = number of the given tags the item carries; ties by quality, then newer
publish_ts, then smaller item_id.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from index.channels import NO_FILTER, Candidate, RecallFilter, check_limit, check_tags
from index.collections import MAX_LIMIT, ContentIndex
from index.errors import InvalidContentError
from mmrec.vocab import TERM

TAG_COLUMNS = ("item_id", "material", "tags", "quality", "publish_ts")


class TagIndex:
    """Inverted tag index over a snapshot of item metadata; `recall` is read-only (thread-safe).

    Hand-written on numpy because the library alternatives measured slower: DuckDB SQL over a
    (tag, item) table took ~15 ms a query at 100k items (bench/term_recall_bench.py).
    Cold-start upserts reach it when it is rebuilt (`TagIndex(...)` / `from_index` again).
    """

    def __init__(self, items: pd.DataFrame) -> None:
        if missing := [c for c in TAG_COLUMNS if c not in items.columns]:
            raise InvalidContentError(f"tag index needs columns {TAG_COLUMNS}; missing {missing}")
        items = items.reset_index(drop=True)
        self._item_ids = items["item_id"].to_numpy(np.int64)
        self._material = items["material"].astype("category")
        self._material_codes = self._material.cat.codes.to_numpy()
        # Rank order once: best (quality desc, publish_ts desc, item_id asc) first, so a query
        # only sorts by matched count (stable) over positions in this order.
        order = np.lexsort(
            (
                self._item_ids,
                -items["publish_ts"].to_numpy(np.int64),
                -items["quality"].to_numpy(float),
            )
        )
        self._rank = np.empty(len(items), dtype=np.int64)
        self._rank[order] = np.arange(len(items))
        pairs = items[["tags"]].assign(row=np.arange(len(items))).explode("tags").dropna()
        self._postings = {
            str(tag): rows.to_numpy(np.int64) for tag, rows in pairs.groupby("tags")["row"]
        }
        self.size = len(items)

    @classmethod
    def from_index(cls, index: ContentIndex) -> TagIndex:
        """Snapshot of the active collection's tags and scalars."""
        return cls(index.scan([c for c in TAG_COLUMNS if c != "item_id"]))

    def recall(
        self, tags: Collection[str] | None, *, limit: int, filters: RecallFilter = NO_FILTER
    ) -> list[Candidate]:
        """Up to `limit` items carrying any of `tags`, most tags matched first; [] for no tags."""
        limit, tags = check_limit(limit), check_tags(tags)
        postings = [self._postings[t] for t in tags if t in self._postings]
        if not postings or limit == 0 or filters.keeps_nothing():
            return []
        counts = np.bincount(np.concatenate(postings), minlength=self.size)  # (N,) tags matched
        rows = np.flatnonzero(counts)
        if filters.materials is not None:
            categories = self._material.cat.categories
            codes = [categories.get_loc(m) for m in filters.materials if m in categories]
            rows = rows[np.isin(self._material_codes[rows], codes)]
        if filters.exclude_ids:
            excluded = np.fromiter(filters.exclude_ids, np.int64, len(filters.exclude_ids))
            rows = rows[~np.isin(self._item_ids[rows], excluded)]
        matched = counts[rows]
        # one int64 key: more tags matched first, then the precomputed rank (smaller is better)
        key = matched.astype(np.int64) * self.size + (self.size - 1 - self._rank[rows])
        top = np.argpartition(-key, limit - 1)[:limit] if len(key) > limit else np.arange(len(key))
        best = top[np.argsort(-key[top], kind="stable")]
        return [
            Candidate(int(self._item_ids[r]), float(m), TERM)
            for r, m in zip(rows[best], matched[best], strict=True)
        ]


def milvus_term_recall(
    index: ContentIndex,
    tags: Collection[str] | None,
    *,
    limit: int,
    filters: RecallFilter = NO_FILTER,
) -> list[Candidate]:
    """Same contract as `TagIndex.recall`, answered by Milvus ARRAY filters (see module doc).

    One `array_contains` query per tag returns matching ids only: milvus-lite 2.5.1 returns
    ARRAY fields in time quadratic in the reply's rows, so the tags themselves are never read.
    """
    limit, tags = check_limit(limit), check_tags(tags)
    if not tags or limit == 0 or filters.keeps_nothing():
        return []
    collection = index.collection
    matched: dict[int, int] = {}
    for tag in tags:
        quoted = '"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'
        expr = " and ".join(
            filter(None, [f"array_contains(tags, {quoted})", filters.milvus_expr()])
        )
        for row in index.client.query(
            collection, filter=expr, output_fields=["item_id"], limit=MAX_LIMIT
        ):
            matched[row["item_id"]] = matched.get(row["item_id"], 0) + 1
    if not matched:
        return []
    scalars = index.client.get(
        collection, ids=list(matched), output_fields=["quality", "publish_ts"]
    )
    frame = pd.DataFrame(scalars)
    frame["matched"] = frame["item_id"].map(matched)
    frame = frame.sort_values(
        ["matched", "quality", "publish_ts", "item_id"], ascending=[False, False, False, True]
    ).head(limit)
    return [
        Candidate(int(i), float(m), TERM)
        for i, m in zip(frame["item_id"], frame["matched"], strict=True)
    ]
