"""Ranking evaluation: per-task AUC and GAUC (by user), on all, warm and cold items.

GAUC (Zhou et al., DIN, KDD 2018): the mean of per-user AUCs weighted by the user's
impressions, over users with both a positive and a negative for the task; it asks whether
the model orders one user's candidates, which is the ranking stage's job, where global AUC
also rewards telling active users from idle ones. A metric with no positive (or no
negative) in its slice is None: undefined, not 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from models.item_content import ItemContent
from models.layers import inference
from models.ranking import RankingModel
from models.ranking_inputs import RankingData
from models.recall_vectors import ItemVectors

SLICES = ("all", "warm", "cold")
# The synthetic world's per-user modality preferences (truth/users_latent.parquet): how much a
# user's clicks follow the cover's quality, the title's style and popularity.
PREFERENCES = ("pref_visual", "pref_text", "pref_popularity")


def predict(
    model: RankingModel,
    data: RankingData,
    content: ItemContent | None,
    batch_size: int = 2048,
    vectors: ItemVectors | None = None,
) -> dict[str, np.ndarray]:
    """{task: probabilities (N,)} for every row, in eval mode; `vectors`: the recall vectors
    (a model with use_recall_vector needs them)."""
    needs_content = model.config.use_multimodal
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    with inference(model):
        for start in range(0, len(data), batch_size):
            batch = data.batch(
                slice(start, start + batch_size),
                content if needs_content else None,
                history_content=model.config.use_min,
                vectors=vectors if model.config.use_recall_vector else None,
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


def truth_groups(truth_dir: Path, data: RankingData) -> dict[str, np.ndarray]:
    """Row masks by the world's hidden user preferences, for slicing metrics: for each of
    PREFERENCES, "<pref> top third" (the users in its top tercile) and "<pref> rest"; {} when
    the data has no truth (imported data)."""
    path = truth_dir / "users_latent.parquet"
    if not path.exists():
        return {}
    latent = pd.read_parquet(path, columns=["user_id", *PREFERENCES]).set_index("user_id")
    rows = latent.reindex(data.user_id.numpy())
    groups = {}
    for pref in PREFERENCES:
        top = (rows[pref] >= latent[pref].quantile(2 / 3)).to_numpy()
        groups[f"{pref} top third"], groups[f"{pref} rest"] = (
            top,
            ~top & rows[pref].notna().to_numpy(),
        )
    return groups


def oracle_scores(
    truth_dir: Path, raw_dir: Path, data: RankingData, average: tuple[str, ...] = ()
) -> np.ndarray | None:
    """Each row's click logit under the world's hidden utility (datagen.behaviour.click_logit):
    the ceiling a ranker could reach on these rows; None for data without truth. The
    product-page link term is left out (the logs do not say which product page a detail
    impression was on); the row's day comes from the item's age at the row and its
    publication time. `average`: user columns replaced by the population's mean
    ("preferred_style_idx": nobody's style known), so the oracle shows what knowing each
    user's own preference is worth."""
    if not (truth_dir / "users_latent.parquet").exists():
        return None
    from datagen.behaviour import click_logit, popularity_on_day
    from datagen.catalog import SECONDS_PER_DAY

    items = pd.read_parquet(truth_dir / "items_latent.parquet")
    users = pd.read_parquet(truth_dir / "users_latent.parquet")
    for column in average:
        users[column] = -1 if column == "preferred_style_idx" else users[column].mean()
    published = pd.read_parquet(raw_dir / "items.parquet", columns=["item_id", "publish_ts"])
    item_rows = pd.Index(items.item_id).get_indexer(data.item_id.numpy())
    user_rows = pd.Index(users.user_id).get_indexer(data.user_id.numpy())
    if (item_rows < 0).any() or (user_rows < 0).any():
        raise ValueError("the ranking rows name users or items the world's truth does not hold")
    publish_s = (
        published.set_index("item_id").publish_ts.reindex(items.item_id.iloc[item_rows])
        .astype("datetime64[s, UTC]").astype("int64").to_numpy()
    )  # fmt: skip
    event_s = publish_s + data.age_hours.numpy().astype(np.float64) * 3600
    day_start = event_s - event_s % SECONDS_PER_DAY
    popularity = popularity_on_day(items.iloc[item_rows], publish_s, day_start)
    logit, _ = click_logit(
        items, users, user_rows, item_rows, popularity, data.position.numpy(),
        np.zeros(len(item_rows), dtype=bool),
    )  # fmt: skip
    return logit


def oracle_summary(
    truth_dir: Path, raw_dir: Path, data: RankingData, groups: dict[str, np.ndarray]
) -> dict[str, Any] | None:
    """The oracle's click metrics on `data` (as `headline` names them), per user group, and
    its click AUC / GAUC when it no longer knows each user's own preference (PREFERENCES one
    at a time, then the title style as well as its weight, then all three); None without
    truth."""
    scores = oracle_scores(truth_dir, raw_dir, data)
    if scores is None:
        return None
    labels = (data.labels["click"].numpy() >= 0.5).astype(np.int8)
    without = {}
    for average in (
        *((pref,) for pref in PREFERENCES),
        ("pref_text", "preferred_style_idx"),
        PREFERENCES,
    ):
        blind = oracle_scores(truth_dir, raw_dir, data, average)
        without[" + ".join(average)] = {
            "auc": auc(labels, blind),
            "gauc": gauc(labels, blind, data.user_id.numpy()),
        }
    return {
        "metrics": headline(evaluate({"click": scores}, data)),
        "groups": group_metrics(scores, data, groups),
        "without_user_preference": without,
    }


def group_metrics(
    scores: np.ndarray, data: RankingData, groups: dict[str, np.ndarray], task: str = "click"
) -> dict[str, dict[str, float | None]]:
    """{group: {auc, gauc}} of one task's scores on each group's rows."""
    defined = data.label_masks[task].numpy()
    labels = (data.labels[task].numpy() >= 0.5).astype(np.int8)
    users = data.user_id.numpy()
    out = {}
    for name, mask in groups.items():
        keep = defined & mask
        out[name] = {
            "auc": auc(labels[keep], scores[keep]),
            "gauc": gauc(labels[keep], scores[keep], users[keep]),
        }
    return out


def headline(metrics: dict[str, dict]) -> dict[str, float | None]:
    """Flat {"<task>_<slice>_<auc|gauc>": value} for logs, tables and metadata."""
    return {
        f"{task}_{name}_{metric}": values[metric]
        for task, slices in metrics.items()
        for name, values in slices.items()
        for metric in ("auc", "gauc")
    }
