"""Ranking evaluation: per-task AUC and GAUC (by user), on all, warm and cold items.

GAUC (Zhou et al., DIN, KDD 2018): the mean of per-user AUCs weighted by the user's
impressions, over users with both a positive and a negative for the task; it asks whether
the model orders one user's candidates, which is the ranking stage's job, where global AUC
also rewards telling active users from idle ones. A metric with no positive (or no
negative) in its slice is None: undefined, not 0.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from models.item_content import ItemContent
from models.layers import inference
from models.ranking import RankingModel
from models.ranking_inputs import RankingData

SLICES = ("all", "warm", "cold")


def predict(
    model: RankingModel,
    data: RankingData,
    content: ItemContent | None,
    batch_size: int = 2048,
) -> dict[str, np.ndarray]:
    """{task: probabilities (N,)} for every row, in eval mode."""
    needs_content = model.config.use_multimodal
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    with inference(model):
        for start in range(0, len(data), batch_size):
            batch = data.batch(
                slice(start, start + batch_size),
                content if needs_content else None,
                history_content=model.config.use_min,
            )
            out = model(batch.user, batch.items)
            for task in model.config.tasks:
                chunks[task].append(torch.sigmoid(out[f"logits_{task}"]).numpy())
    return {t: np.concatenate(v) for t, v in chunks.items()}


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, None when only one class is present."""
    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float | None:
    """Impression-weighted mean of per-user AUCs over users with both classes."""
    frame = pd.DataFrame({"y": labels, "s": scores, "u": users})
    total, weight = 0.0, 0
    for _, group in frame.groupby("u", sort=False):
        value = auc(group.y.to_numpy(), group.s.to_numpy())
        if value is not None:
            total += value * len(group)
            weight += len(group)
    return total / weight if weight else None


def evaluate(probs: dict[str, np.ndarray], data: RankingData) -> dict[str, dict]:
    """{task: {slice: {auc, gauc, rows, positives}}} over the slices all / warm / cold."""
    cold = data.is_cold.numpy()
    users = data.user_id.numpy()
    result: dict[str, dict] = {}
    for task, scores in probs.items():
        defined = data.label_masks[task].numpy()
        labels = data.labels[task].numpy()
        per_slice = {}
        for name in SLICES:
            keep = defined & {"all": True, "warm": ~cold, "cold": cold}[name]
            y, s = (labels[keep] >= 0.5).astype(np.int8), scores[keep]
            per_slice[name] = {
                "auc": auc(y, s),
                "gauc": gauc(y, s, users[keep]),
                "rows": int(keep.sum()),
                "positives": int(y.sum()),
            }
        result[task] = per_slice
    return result


def headline(metrics: dict[str, dict]) -> dict[str, float | None]:
    """Flat {"<task>_<slice>_<auc|gauc>": value} for logs, tables and metadata."""
    return {
        f"{task}_{name}_{metric}": values[metric]
        for task, slices in metrics.items()
        for name, values in slices.items()
        for metric in ("auc", "gauc")
    }
