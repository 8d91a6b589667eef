"""Feature columns to matrices (models/feature_columns.py): one function for training's
offline frames and serving's online rows, so both read the same inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.feature_columns import padded_sequences, stack_embeddings


def test_sequences_are_cut_to_max_len_and_padded_with_minus_one() -> None:
    column = pd.Series([[5, 4, 3, 2], None, [], [9]])
    assert padded_sequences(column, 3).tolist() == [[5, 4, 3], [-1] * 3, [-1] * 3, [9, -1, -1]]


def test_a_repeated_row_object_reads_as_the_row_before() -> None:
    """Serving repeats one user's list on every candidate row; those rows equal the first."""
    history = [7, 8]
    column = pd.Series([history, history, history, [1]])
    assert padded_sequences(column, 2).tolist() == [[7, 8], [7, 8], [7, 8], [1, -1]]
    vector = [0.5, 1.5]
    rows = stack_embeddings(pd.Series([vector, None, vector, vector]), 2)
    assert rows.tolist() == [[0.5, 1.5], [0.0, 0.0], [0.5, 1.5], [0.5, 1.5]]


def test_embeddings_of_another_width_name_the_row() -> None:
    column = pd.Series([[1.0, 2.0], None, [1.0]], name="cdr_category_affinity")
    with pytest.raises(ValueError, match="cdr_category_affinity row 2 has 1 values, want 2"):
        stack_embeddings(column, 2)


def test_null_rows_take_the_fill() -> None:
    fill = np.full((2, 2), 9.0, dtype=np.float32)
    assert stack_embeddings(pd.Series([None, [1.0, 2.0]]), 2, fill=fill).tolist() == [
        [9.0, 9.0],
        [1.0, 2.0],
    ]
