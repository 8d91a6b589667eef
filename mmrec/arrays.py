"""Lookups in sorted id arrays, the one way every stage finds ids' rows in a table."""

from __future__ import annotations

import numpy as np


def find_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, found) of 1-D `ids` in the sorted, distinct `sorted_ids`: `rows[i]` is the row
    of `ids[i]` where `found[i]`, and some valid row (0 in an empty table) otherwise.

    A binary search per id: `np.isin` hashes the whole table on every call (1.24 ms a call
    over 104k ids, bench/reported/serving-levers-100k.json)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
    rows = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return rows, sorted_ids[rows] == ids
