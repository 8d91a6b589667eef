"""Term recall on tags: Milvus ARRAY filters vs an inverted (tag, item) table.

Three implementations of index.term_recall's contract: `TagIndex` (numpy postings, the
default), `milvus_term_recall` (Milvus array_contains filters) and `DuckDBTagTable` below (the
same inverted table in DuckDB SQL). Same catalog (tags from a Zipf-like vocabulary), tag
queries and filters (material + already-seen ids) for all; reports p50/p99 latency per
query, ratios against TagIndex, and whether each returns TagIndex's ranked ids.

    .venv/bin/python -m bench.term_recall_bench --items 100000

Writes bench/results/term_recall.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from index.channels import Candidate, RecallFilter
from index.collections import ContentIndex, build_content_index
from index.term_recall import TagIndex, milvus_term_recall
from mmrec.vocab import MATERIALS, TERM

RESULTS = Path(__file__).resolve().parent / "results" / "term_recall.json"
console = Console(width=160)


def make_catalog(n: int, n_tags: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Items with 1-5 tags drawn with Zipf-like popularity; tiny vectors (not searched here)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_tags + 1)
    popularity /= popularity.sum()
    vocab = np.array([f"tag{k:05d}" for k in range(n_tags)])
    tags = [
        sorted(set(rng.choice(vocab, size=rng.integers(1, 6), p=popularity).tolist()))
        for _ in range(n)
    ]
    frame = pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "material": rng.choice(MATERIALS, size=n),
            "category": "books",
            "tags": tags,
            "publish_ts": rng.integers(1_790_000_000, 1_800_000_000, size=n),
            "quality": rng.random(n),
        }
    )
    return frame, rng.normal(size=(n, 8)).astype(np.float32)


class DuckDBTagTable:
    """The inverted table as DuckDB tables (items, item_tags), ranked in SQL."""

    def __init__(self, items: pd.DataFrame) -> None:
        self.con = duckdb.connect(":memory:")
        meta = items[["item_id", "material", "quality", "publish_ts"]]  # noqa: F841 (SQL reads it)
        pairs = items[["item_id", "tags"]].explode("tags").rename(columns={"tags": "tag"})  # noqa: F841
        self.con.execute("CREATE TABLE items AS SELECT * FROM meta")
        self.con.execute("CREATE TABLE item_tags AS SELECT * FROM pairs ORDER BY tag")

    def recall(self, tags: list[str], *, limit: int, filters: RecallFilter) -> list[Candidate]:
        rows = self.con.execute(
            """
            SELECT i.item_id, count(*) AS matched
            FROM item_tags t JOIN items i USING (item_id)
            WHERE t.tag IN (SELECT unnest($tags)) AND list_contains($materials, i.material)
              AND NOT list_contains($exclude::BIGINT[], i.item_id)
            GROUP BY i.item_id, i.quality, i.publish_ts
            ORDER BY matched DESC, i.quality DESC, i.publish_ts DESC, i.item_id
            LIMIT $limit
            """,
            {"tags": tags, "materials": list(filters.materials), "limit": limit,
             "exclude": sorted(filters.exclude_ids)},
        ).fetchall()  # fmt: skip
        return [Candidate(int(item), float(matched), TERM) for item, matched in rows]


def timed(fn: Callable[[list[str]], list], queries: list[list[str]]) -> tuple[list, list[float]]:
    for q in queries[:5]:
        fn(q)
    out, secs = [], []
    for q in queries:
        started = time.perf_counter()
        out.append(fn(q))
        secs.append(time.perf_counter() - started)
    return out, secs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--tags", type=int, default=2_000, help="tag vocabulary size")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    frame, vectors = make_catalog(args.items, args.tags, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    # a user's interest tags: 1-5 tags from items they might have seen
    queries = [
        sorted({t for row in frame["tags"].iloc[rng.integers(0, args.items, 3)] for t in row})[:5]
        for _ in range(args.queries)
    ]
    filters = RecallFilter(
        materials=("video", "live"),
        exclude_ids=frozenset(rng.choice(args.items, 100, replace=False).tolist()),
    )
    with tempfile.TemporaryDirectory() as workdir:
        index = ContentIndex(str(Path(workdir) / "terms.db"))
        started = time.perf_counter()
        build_content_index(index.client, vectors, frame, "1")
        runs, builds = {}, {"milvus array_contains": time.perf_counter() - started}
        for name, make in (
            ("TagIndex numpy postings", TagIndex),
            ("duckdb inverted table", DuckDBTagTable),
        ):
            started = time.perf_counter()
            table_index = make(frame)
            builds[name] = time.perf_counter() - started
            runs[name] = timed(
                lambda q, t=table_index: t.recall(q, limit=args.limit, filters=filters), queries
            )
        runs["milvus array_contains"] = timed(
            lambda q: milvus_term_recall(index, q, limit=args.limit, filters=filters), queries
        )
        index.client.close()
    base_ids, base_s = runs["TagIndex numpy postings"]
    base_p50 = float(np.quantile(base_s, 0.5))
    rows = {
        name: {
            "p50_ms": round(1000 * float(np.quantile(secs, 0.5)), 3),
            "p99_ms": round(1000 * float(np.quantile(secs, 0.99)), 3),
            "p50_vs_tagindex": round(float(np.quantile(secs, 0.5)) / base_p50, 2),
            "same_ranked_ids_as_tagindex": float(
                np.mean([a == b for a, b in zip(ids, base_ids, strict=True)])
            ),
            "build_s": round(builds[name], 2),
        }
        for name, (ids, secs) in runs.items()
    }
    result = {
        "items": args.items, "tags": args.tags, "queries": args.queries, "limit": args.limit,
        "filter": "material in (video, live), 100 seen ids excluded", "rows": rows,
    }  # fmt: skip
    table = Table(
        title=f"term recall: {args.items:,} items, {args.tags:,} tags, limit {args.limit}"
    )
    cols = ("p50_ms", "p99_ms", "p50_vs_tagindex", "same_ranked_ids_as_tagindex", "build_s")
    table.add_column("backend")
    for col in cols:
        table.add_column(col, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(str(row[c]) for c in cols))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
