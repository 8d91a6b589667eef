"""mmrec.arrays: the sorted-id lookup every stage uses, against np.isin / np.searchsorted."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmrec.arrays import find_sorted

ids = st.lists(st.integers(-5, 60), max_size=30)


@given(table=ids, asked=ids)
def test_find_sorted_finds_exactly_the_ids_in_the_table(table: list[int], asked: list[int]) -> None:
    sorted_ids = np.unique(np.array(table, dtype=np.int64))
    asked_ids = np.array(asked, dtype=np.int64)
    rows, found = find_sorted(sorted_ids, asked_ids)
    assert found.tolist() == np.isin(asked_ids, sorted_ids).tolist()
    assert rows.shape == asked_ids.shape and ((rows >= 0) & (rows < max(len(sorted_ids), 1))).all()
    assert (sorted_ids[rows[found]] == asked_ids[found]).all()
