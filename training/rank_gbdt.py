"""The GBDT baseline of the ranking ablation: LightGBM on the ranking set, flattened.

A practitioner's first model on these features, on the same rows and split as the MMoE
(`RankingData`, training/rank_train.py), one binary LightGBM model per task. What the
ranking service's columns become (`tabular_features`):

- context: position, source, material and the candidate's category (LightGBM categoricals);
- cross-domain: the 12 product-domain category affinities, the affinity at the candidate's
  category, the user's product events in 30 days;
- the click history: its length, the click share per category (smoothed and logged, as
  the MMoE reads them) and that share at the candidate's category; the lengths of the watch,
  engage, SKU-click, cart and purchase sequences;
- the candidate's statistics: log1p age in hours, the four CTR windows, impressions and
  clicks in 1 and 7 days (logged), the 7-day watch ratio, the content stage's quality score
  and its category confidence at the item's category, the video's duration;
- content, flattened: per modality (text, visual) the cosine of the candidate's embedding
  with the mean embedding of the user's clicked items (the user x item match a practitioner
  builds by hand) and the candidate's embedding on the first `pca_components` principal
  axes (fit on the train split's candidates);
- with `RankingData.seq_popularity`: the user's popularity taste (the mean log popularity of
  the history's items) and its product with the candidate's log popularity.

No ID features: item and user IDs are high-cardinality categoricals a tree overfits; the
candidate's CTR and impression windows are its target statistics. Each task's model stops on
its own valid AUC (`early_stopping_rounds`); watch is trained on the rows that define it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmrec.errors import UserError
from mmrec.vocab import MATERIALS, POSITIONS, SOURCES
from models.item_content import ItemContent
from models.ranking import POPULARITY_SHIFT, category_shares, log_rate, popularity_taste
from models.ranking_inputs import RankingData

# The ranking set's scalar columns the GBDT reads beyond RankingData (training_sets/build.py).
TABULAR_COLUMNS = (
    "impressions_1d", "clicks_1d", "impressions_7d", "clicks_7d", "watch_ratio_7d",
    "quality_score", "category_probs", "duration_s", "cdr_event_count_30d",
    "item_watch_seq", "item_engage_seq", "sku_click_seq", "sku_cart_seq", "sku_purchase_seq",
)  # fmt: skip
CATEGORICAL = ("position", "source", "material", "category")
CHUNK = 4096  # rows per history-embedding gather


@dataclass(frozen=True)
class GbdtConfig:
    """LightGBM settings: common defaults for a few hundred thousand rows, not tuned here."""

    num_leaves: int = 63
    learning_rate: float = 0.05
    max_rounds: int = 2000
    early_stopping_rounds: int = 50  # rounds without a better valid AUC
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    pca_components: int = 8  # principal axes kept per content modality
    threads: int = 1


@dataclass
class GbdtModel:
    """One booster per task, the content PCA the features were built with, the cost."""

    boosters: dict[str, Any]
    pca: dict[str, Any]
    best_rounds: dict[str, int]
    train_seconds: float
    feature_names: list[str] = field(default_factory=list)


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise UserError(
            "the gbdt variant needs LightGBM: pip install -e '.[baselines]' (make venv does)"
        ) from None
    return lightgbm


def fit_pca(data: RankingData, content: ItemContent | None, components: int) -> dict[str, Any]:
    """Per content modality, PCA over the embeddings of the train split's distinct candidates."""
    from sklearn.decomposition import PCA

    if content is None:
        return {}
    rows = torch.from_numpy(np.unique(data.item_rows.numpy()))
    tables = {"text": content.text, "visual": content.visual}
    return {
        m: PCA(components, random_state=0).fit(table[rows].numpy())
        for m, table in tables.items()
        if table is not None
    }


def _history_cosine(data: RankingData, table: torch.Tensor) -> np.ndarray:
    """(N,) cosine of each candidate's embedding with the mean of its user's history's
    embeddings (0 without history or content)."""
    out = np.zeros(len(data), dtype=np.float32)
    for start in range(0, len(data), CHUNK):
        rows = slice(start, start + CHUNK)
        seq = table[data.seq_rows[rows]]  # (B, L, width)
        mask = data.seq_mask[rows].unsqueeze(-1).to(seq.dtype)
        pooled = (seq * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, width)
        out[rows] = torch.nn.functional.cosine_similarity(
            table[data.item_rows[rows]], pooled, dim=1
        ).numpy()
    return out


def _lengths(column: pd.Series) -> np.ndarray:
    return column.map(lambda seq: 0 if seq is None else len(seq)).to_numpy(np.float32)


def tabular_features(
    data: RankingData, content: ItemContent | None, pca: dict[str, Any], categories: int
) -> pd.DataFrame:
    """The flattened features of every row of `data` (module docstring), which must keep the
    set's TABULAR_COLUMNS (`load_splits(..., keep_columns=TABULAR_COLUMNS)`)."""
    extra = data.extra
    if extra is None or set(TABULAR_COLUMNS) - set(extra.columns):
        raise ValueError("the ranking data must keep TABULAR_COLUMNS (load_splits keep_columns)")
    category = data.category.numpy()
    at_category = np.clip(category, 0, None)
    affinity = data.category_affinity.numpy()
    shares = log_rate(
        category_shares(data.seq_category, data.seq_mask, categories, smoothed=True)
    ).numpy()
    rows = np.arange(len(data))
    columns: dict[str, np.ndarray] = {
        "position": data.position.numpy(),
        "source": data.source.numpy(),
        "material": data.material.numpy(),
        "category": category,
        "cdr_at_category": np.where(category >= 0, affinity[rows, at_category], 0.0),
        "cdr_event_count_30d": extra.cdr_event_count_30d.astype("float64").fillna(0).to_numpy(),
        "history_length": data.seq_mask.sum(1).numpy().astype(np.float32),
        "history_share_at_category": np.where(category >= 0, shares[rows, at_category], 0.0),
        "log_age_hours": np.log1p(data.age_hours.clamp(min=0).numpy()),
    }
    for i in range(categories):
        columns[f"cdr_affinity_{i}"] = affinity[:, i]
        columns[f"history_share_{i}"] = shares[:, i]
    for name in ("item_watch_seq", "item_engage_seq", "sku_click_seq", "sku_cart_seq"):
        columns[f"{name}_length"] = _lengths(extra[name])
    columns["sku_purchase_seq_length"] = _lengths(extra.sku_purchase_seq)
    ctr = log_rate(data.ctr_windows).numpy()
    for i in range(ctr.shape[1]):
        columns[f"log_ctr_{i}"] = ctr[:, i]
    for name in ("impressions_1d", "clicks_1d", "impressions_7d", "clicks_7d"):
        columns[f"log1p_{name}"] = np.log1p(extra[name].astype("float64").fillna(0).to_numpy())
    for name in ("watch_ratio_7d", "quality_score", "duration_s"):
        columns[name] = extra[name].astype("float64").to_numpy()  # NaN: LightGBM's missing
    probs = extra.category_probs.to_numpy()
    columns["tag_confidence"] = np.array(
        [
            p[c] if p is not None and c >= 0 and len(p) > c else np.nan
            for p, c in zip(probs, category, strict=True)
        ]
    )
    if data.seq_popularity is not None:
        taste = popularity_taste(data.seq_popularity, data.seq_mask)[:, 0].numpy()
        columns["history_popularity"] = taste
        columns["popularity_x_taste"] = taste * (columns["log1p_impressions_7d"] - POPULARITY_SHIFT)
    if content is not None:
        tables = {"text": content.text, "visual": content.visual}
        for m, table in tables.items():
            if table is None:
                continue
            columns[f"{m}_history_cosine"] = _history_cosine(data, table)
            axes = pca[m].transform(table[data.item_rows].numpy())
            for i in range(axes.shape[1]):
                columns[f"{m}_pc{i}"] = axes[:, i]
    frame = pd.DataFrame(columns)
    for name, vocab in (("position", POSITIONS), ("source", SOURCES), ("material", MATERIALS)):
        frame[name] = pd.Categorical(frame[name], categories=range(len(vocab)))
    frame["category"] = pd.Categorical(frame["category"], categories=range(-1, categories))
    return frame


def task_labels(data: RankingData, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows that define `task` (a mask) and their labels there (0 / 1)."""
    mask = data.label_masks[task].numpy()
    return mask, (data.labels[task].numpy()[mask] >= 0.5).astype(np.int8)


def fit_gbdt(
    train: pd.DataFrame,
    train_data: RankingData,
    valid: pd.DataFrame,
    valid_data: RankingData,
    tasks: tuple[str, ...],
    seed: int,
    config: GbdtConfig = GbdtConfig(),
) -> tuple[dict[str, Any], dict[str, int]]:
    """One booster per task (boosters, best rounds); a task with one class in train or
    valid gets none (`train_and_score` scores it 0.5)."""
    lgb = _lightgbm()
    params = {
        "objective": "binary",
        "metric": "auc",
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "seed": seed,
        "num_threads": config.threads,
        "verbosity": -1,
    }
    boosters, rounds = {}, {}
    for task in tasks:
        train_mask, y_train = task_labels(train_data, task)
        valid_mask, y_valid = task_labels(valid_data, task)
        if len(set(y_train)) < 2 or len(set(y_valid)) < 2:
            continue
        train_set = lgb.Dataset(train[train_mask], y_train)
        valid_set = lgb.Dataset(valid[valid_mask], y_valid, reference=train_set)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=config.max_rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        boosters[task], rounds[task] = booster, int(booster.best_iteration)
    return boosters, rounds


def train_and_score(
    splits, seed: int, config: GbdtConfig = GbdtConfig()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit on train (early stopping on valid) and score the test split: ({task: test
    probabilities}, cost and rounds). `splits`: training.rank_train.RankingSplits."""
    started = time.perf_counter()
    categories = len(splits.profile.categories)
    pca = fit_pca(splits.train, splits.content, config.pca_components)
    features = {
        name: tabular_features(splits[name], splits.content, pca, categories)
        for name in ("train", "valid")
    }
    boosters, rounds = fit_gbdt(
        features["train"], splits.train, features["valid"], splits.valid,
        splits.profile.ranking_tasks, seed, config,
    )  # fmt: skip
    train_seconds = time.perf_counter() - started
    scoring = time.perf_counter()
    test = tabular_features(splits.test, splits.content, pca, categories)
    probs = {
        task: boosters[task].predict(test, num_iteration=rounds[task])
        if task in boosters
        else np.full(len(test), 0.5)
        for task in splits.profile.ranking_tasks
    }
    cost = {
        "train_seconds": train_seconds,
        "score_seconds": time.perf_counter() - scoring,
        "best_rounds": rounds,
        "features": len(test.columns),
    }
    return probs, cost
