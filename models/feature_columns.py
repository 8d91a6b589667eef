"""Feature columns as numpy arrays: Feast hands list features over as one Python object a row
(offline frames in training, online rows in serving), and these are the one way both turn
them into the matrices the models read."""

from __future__ import annotations

import numpy as np
import pandas as pd


def padded_sequences(column: pd.Series, max_len: int) -> np.ndarray:
    """(N, max_len) int64 item ids, newest first, -1 = padding (null list = no history). A row
    that is the very object of the row before (serving repeats one user's list on every
    candidate row) is copied, not converted again."""
    out = np.full((len(column), max_len), -1, dtype=np.int64)
    previous = None
    for i, seq in enumerate(column.to_numpy()):
        if i and seq is previous:
            out[i] = out[i - 1]
        elif seq is not None and len(seq):
            head = np.asarray(seq[:max_len], dtype=np.int64)
            out[i, : len(head)] = head
        previous = seq
    return out


def stack_embeddings(
    column: pd.Series | np.ndarray, width: int, fill: np.ndarray | None = None
) -> np.ndarray:
    """(N, width) float32 from a column of vectors; null rows take `fill`'s row (zeros if
    None); a vector of another width raises ValueError naming the row."""
    name = getattr(column, "name", "embedding")
    rows = np.asarray(column, dtype=object)
    present = np.array([v is not None and not (np.isscalar(v) and pd.isna(v)) for v in rows])
    if present.all() and len(rows):  # the common case, one vectorised copy (100k rows: ~0.1 s)
        lengths = {len(v) for v in rows}
        if lengths == {width}:
            return np.stack(rows).astype(np.float32, copy=False)
    out = np.zeros((len(column), width), dtype=np.float32) if fill is None else fill.copy()
    for i in np.flatnonzero(present):
        if i and rows[i] is rows[i - 1] and present[i - 1]:  # serving's repeated user row
            out[i] = out[i - 1]
            continue
        if len(rows[i]) != width:
            raise ValueError(f"{name} row {i} has {len(rows[i])} values, want {width}")
        out[i] = rows[i]
    return out
