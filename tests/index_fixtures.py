"""A synthetic catalog with planted neighbours, for tests and smoke runs of the index.

Item vectors are random unit vectors, except that item `planted_ids[j]` has exactly the
unit vector `queries[j]`: its inner product with query j is 1, every other item's is
below 1 (random 16-d unit vectors), so exact search must rank it first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmrec.vocab import CATEGORIES, MATERIALS, WORLD_EPOCH

TAG_VOCAB = tuple(f"tag{k:02d}" for k in range(20))


@dataclass(frozen=True)
class PlantedCatalog:
    """vectors (N, d) and metadata rows aligned; queries (Q, d) with planted_ids (Q,)."""

    vectors: np.ndarray
    metadata: pd.DataFrame
    queries: np.ndarray
    planted_ids: np.ndarray


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted_catalog(
    n_items: int = 3_000,
    dim: int = 16,
    n_queries: int = 20,
    seed: int = 0,
    first_id: int = 1_000,
    planted_at: int = 0,
) -> PlantedCatalog:
    """Items `first_id..first_id+n_items-1`; query j's neighbour is row `planted_at + j`.

    Materials cycle through MATERIALS by row; each item has 1-3 tags from TAG_VOCAB;
    publish_ts is one minute apart from WORLD_EPOCH; quality is uniform in [0, 1).
    The same `seed` gives the same queries whatever `planted_at` is.
    """
    rng = np.random.default_rng(seed)
    queries = unit_rows(rng, n_queries, dim)
    vectors = unit_rows(rng, n_items, dim)
    rows = np.arange(planted_at, planted_at + n_queries)
    vectors[rows] = queries
    item_ids = np.arange(first_id, first_id + n_items, dtype=np.int64)
    metadata = pd.DataFrame(
        {
            "item_id": item_ids,
            "material": [MATERIALS[i % len(MATERIALS)] for i in range(n_items)],
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n_items)],
            "tags": [
                sorted(rng.choice(TAG_VOCAB, size=rng.integers(1, 4), replace=False).tolist())
                for _ in range(n_items)
            ],
            "publish_ts": int(WORLD_EPOCH.timestamp()) + 60 * np.arange(n_items, dtype=np.int64),
            "quality": rng.random(n_items),
        }
    )
    return PlantedCatalog(vectors, metadata, queries, item_ids[rows])
