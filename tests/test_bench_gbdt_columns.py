"""The MLP of the columns benchmark reads the GBDT's columns as documented: numbers scaled by
the train split, missing values at the mean, optional quantile bins, categoricals one-hot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.gbdt_columns_bench import mlp_inputs


def _frame(values: list[float], categories: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": values,
            "source": pd.Categorical(categories, categories=range(3)),
        }
    )


def test_mlp_inputs_scale_by_train_and_one_hot_the_categoricals() -> None:
    frames = {
        "train": _frame([1.0, 2.0, 3.0, 4.0], [0, 1, 2, 0]),
        "test": _frame([2.5, np.nan], [2, 2]),
    }
    out = mlp_inputs(frames, ["age", "source"], bins=0)
    mean, std = 2.5, float(np.std([1.0, 2.0, 3.0, 4.0], ddof=1))
    torch.testing.assert_close(out["train"][:, 0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std)
    # the test split: scaled by train's mean and std; a missing value sits at the mean (0)
    torch.testing.assert_close(out["test"][:, 0], torch.tensor([(2.5 - mean) / std, 0.0]))
    assert out["test"][:, 1:].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]  # every category


@pytest.mark.parametrize("bins", [3, 8])
def test_mlp_inputs_bins_widen_only_the_numbers(bins: int) -> None:
    frames = {"train": _frame(list(np.arange(100.0)), [0, 1] * 50)}
    out = mlp_inputs(frames, ["age", "source"], bins=bins)["train"]
    assert out.shape == (100, bins + 3)
    inner = out[:, 1 : bins - 1]
    assert inner.min() >= 0 and inner.max() <= 1  # inner bins are clipped; the outer extrapolate
