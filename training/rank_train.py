"""`mmrec train rank`: fit the multi-task ranker on the ranking set, evaluate, export.

Data: the three splits of the Feast-built ranking set (models/ranking_inputs.py). Training is
seeded (parameter init from `RankingConfig.seed`, shuffling and ID dropout from
`TrainConfig.seed`), single process, `settings.torch_threads` threads (set by the CLI).
Adam for the ranker and, with DSN, a second Adam for the discriminators
(`ranking_parameter_groups`, `train_step`).

Sparse labels, handled with weights: each sparse task's BCE `pos_weight` is the click rate
over that task's positive rate in the training split (share, comment, cart, favorite are 5-60x
rarer than clicks), capped at `TrainConfig.max_pos_weight`; click and watch keep 1. The
weights shift those tasks' probabilities upward (not calibrated), which ranking does not mind;
they are written into the model's metadata. Each sparse task then weighs
`TrainConfig.sparse_task_weight` (0.2) in the loss, click and watch 1: at full weight the four
pos-weighted sparse losses pulled the shared experts away from click (issue #32: small world
click AUC 0.727 -> 0.732 over 3 seeds, and the sparse tasks' own AUCs rose too).

Export: the BentoML model store of the workspace (models/store.py) under
`TrainConfig.model_name`, with the feature service name, the content encoder and fusion
versions, the sequence length and feature names the data path used, and the valid/test
metrics; the same figures go to `artifacts/ranking/metrics.json`.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from mmrec.errors import UserError
from mmrec.feast_store import open_store
from mmrec.io import progress, write_json
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL, RANKING_MODEL_NAME
from mmrec.world_manifest import DataProfile, data_profile, world_end
from models.ranking import RankingModel
from models.ranking_config import RankingConfig
from models.ranking_inputs import (
    CONTENT_VERSION_FIELDS,
    CTR_FEATURES,
    FEATURE_SERVICE,
    SEQUENCE_FEATURE,
    ItemContent,
    RankingData,
    build_ranking_data,
    load_history_popularity,
    load_item_categories,
    load_item_content,
    referenced_items,
    require_content,
)
from models.ranking_loss import RankingLoss, ranking_parameter_groups, train_step
from models.recall_vectors import RECALL_MODEL_KEY, ItemVectors, load_item_vectors
from models.store import KNOWN_ITEMS, KNOWN_USERS, save_model
from training.rank_eval import auc, evaluate, headline, predict
from training_sets.build import read_split

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SCALAR_FIT_ROWS = 4096  # train rows the scalar inputs' means, stds and quantiles are taken over
SWITCHES = (
    "use_multimodal", "use_dsn", "use_min", "use_cdr", "use_timeliness", "use_history_category",
    "use_user_id", "use_popularity", "use_recall_vector", "dsn_in_min", "standardize",
    "bin_scalars", "candidate_id", "candidate_content", "slow_item_ids",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the model's own settings live in `RankingConfig`."""

    epochs: int = 12  # at most; training stops earlier when valid click AUC stops rising
    patience: int = 2  # epochs without a better valid click AUC before stopping
    batch_size: int = 512
    lr: float = 2e-3
    disc_lr: float = 1e-3  # DSN discriminators' Adam learning rate
    max_seq_len: int = 20  # newest clicked items kept per user
    seed: int = 0
    max_pos_weight: float = 50.0  # cap on a sparse task's BCE pos_weight
    # Each sparse task's weight in the loss (click and watch: 1), see the module docstring.
    sparse_task_weight: float = 0.2
    model_name: str = RANKING_MODEL_NAME  # BentoML model store name

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "disc_lr"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.sparse_task_weight <= 1:
            raise UserError(f"sparse_task_weight must be in [0, 1], got {self.sparse_task_weight}")
        if self.max_pos_weight < 1:
            raise UserError(f"max_pos_weight must be >= 1, got {self.max_pos_weight}")
        # BentoML's rule for a model name, checked before training rather than at the save
        if not re.fullmatch(r"[a-z0-9]([-._a-z0-9]{0,61}[a-z0-9])?", self.model_name):
            raise UserError(
                f"model name {self.model_name!r}: use lower-case letters, digits, '-', '_' and "
                "'.', starting and ending with a letter or digit (e.g. ranking-no-gmf)"
            )


@dataclass
class RankingSplits:
    """The three splits as tensors plus the shared item content table (None = no content)."""

    train: RankingData
    valid: RankingData
    test: RankingData
    content: ItemContent | None
    profile: DataProfile  # what the data has: tasks, categories, modalities, SKUs
    # the recall model's item vectors (use_recall_vector; None unless loaded)
    vectors: ItemVectors | None = None

    def __getitem__(self, split: str) -> RankingData:
        return getattr(self, split)


@dataclass
class FitResult:
    model: RankingModel
    history: list[dict[str, float]]  # per epoch: mean losses, valid click AUC, learning rate
    train_seconds: float
    samples_per_s: float


def load_splits(
    settings: Settings,
    max_seq_len: int = 20,
    store=None,
    recall_model: str | None = None,
    keep_columns: tuple[str, ...] = (),
) -> RankingSplits:
    """Read the ranking set's splits and look up the content, categories and popularity of
    every item they mention; with `recall_model` (a recall model tag), the catalog's vectors
    under it too (use_recall_vector); `keep_columns`: set columns kept in `RankingData.extra`."""
    frames = {split: read_split(settings, FEATURE_SERVICE, split) for split in SPLITS}
    profile = data_profile(settings)
    store = store or open_store(settings)
    referenced = referenced_items(list(frames.values()), max_seq_len)
    content = load_item_content(store, referenced, world_end(settings), profile.content_modalities)
    categories = load_item_categories(store, referenced, world_end(settings))
    popularity = load_history_popularity(store, list(frames.values()), max_seq_len)
    data = {
        split: build_ranking_data(
            frame,
            content,
            max_seq_len,
            profile.ranking_tasks,
            len(profile.categories),
            categories,
            popularity,
            keep_columns,
        )
        for split, frame in frames.items()
    }
    # Cold = no interaction history the model could learn an ID from: the set's flag (first
    # seen on a test day) or, wider, an item absent from the train split (an item first seen
    # on a valid day is not flagged by the set but has no trained ID either).
    # Likewise a user absent from the train split has no trained user embedding.
    trained, trained_users = data["train"].item_id.unique(), data["train"].user_id.unique()
    for split in ("valid", "test"):
        unseen = ~torch.isin(data[split].item_id, trained)
        data[split].is_cold = data[split].is_cold | unseen
        data[split].stats["rows_cold"] = int(data[split].is_cold.sum())
        data[split].user_known = torch.isin(data[split].user_id, trained_users)
        data[split].stats["rows_user_unseen"] = int((~data[split].user_known).sum())
    vectors = None
    if recall_model is not None:
        vectors = load_item_vectors(settings, store, recall_model)
    return RankingSplits(**data, content=content, profile=profile, vectors=vectors)


def sparse_pos_weights(train: RankingData, tasks: tuple[str, ...], cap: float) -> dict[str, float]:
    """pos_weight per sparse task = click rate / task rate (>= 1, <= cap); see the docstring."""

    def rate(task: str) -> float:
        mask = train.label_masks[task]
        return float(train.labels[task][mask].mean()) if mask.any() else 0.0

    click = rate("click")
    weights = {}
    for task in tasks:
        if task in ("click", "watch"):
            continue
        task_rate = rate(task)
        weights[task] = cap if task_rate == 0 else float(np.clip(click / task_rate, 1.0, cap))
    return weights


def model_config(
    splits: RankingSplits, train_config: TrainConfig, switches: dict[str, bool] | None = None
) -> RankingConfig:
    """The RankingConfig for these data: the tasks, categories and content modalities the data
    has, switches (RankingConfig's defaults: all on but the user ID; CDR only with a product
    domain), pos weights, seed."""
    switches = switches or {}
    unknown = set(switches) - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown switches {sorted(unknown)}; known: {SWITCHES}")
    profile = splits.profile
    base = RankingConfig(
        **{"use_cdr": profile.has_skus, **switches},
        tasks=profile.ranking_tasks,
        n_categories=len(profile.categories),
        content_modalities=profile.content_modalities,
        recall_dim=splits.vectors.dim if splits.vectors is not None else RankingConfig.recall_dim,
        seed=train_config.seed,
    )
    pos_weight = sparse_pos_weights(splits.train, base.tasks, train_config.max_pos_weight)
    config = replace(
        base,
        pos_weight=pos_weight,
        task_weights=dict.fromkeys(pos_weight, train_config.sparse_task_weight),
    )
    require_inputs(config, splits)
    return config


def require_inputs(config: RankingConfig, splits: RankingSplits) -> None:
    """Refuse a config whose inputs the splits lack (content, popularity, recall vectors)."""
    require_content(config, splits.content)
    if config.use_popularity and splits.train.seq_popularity is None:
        raise UserError(
            f"--popularity needs the {FEATURE_SERVICE} service's item_stats view "
            f"(impressions): add it and rebuild the sets"
        )
    if config.use_recall_vector and splits.vectors is None:
        raise UserError("--recall-vector needs a recall model: run `mmrec train recall` first")


def fit(
    config: RankingConfig, splits: RankingSplits, train_config: TrainConfig, label: str = "rank"
) -> FitResult:
    """Train a fresh model over shuffled mini-batches until the valid click AUC has not risen
    for `patience` epochs (or `epochs` have run), halving the learning rate after each epoch
    without a rise (torch's ReduceLROnPlateau); the best epoch's weights are kept."""
    require_inputs(config, splits)
    vectors = splits.vectors if config.use_recall_vector else None
    torch.manual_seed(train_config.seed)  # ID dropout draws from the global generator
    shuffle = torch.Generator().manual_seed(train_config.seed)
    model = RankingModel(config)
    content = splits.content if config.use_multimodal else None
    if config.standardize or config.bin_scalars:  # scalar inputs over a sample of the train split
        sample = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
        batch = splits.train.batch(sample[:SCALAR_FIT_ROWS], content, config.use_min, vectors)
        model.fit_scalar_inputs(batch.user, batch.items)
    loss_fn = RankingLoss(model)
    ranker_groups, disc_params = ranking_parameter_groups(model, train_config.lr)
    optimizer = torch.optim.Adam(ranker_groups)
    disc_optimizer = torch.optim.Adam(disc_params, lr=train_config.disc_lr) if disc_params else None
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=0
    )
    train = splits.train
    bs = train_config.batch_size
    history: list[dict[str, float]] = []
    best_auc, best_state, trained_rows = -1.0, None, 0
    started = time.perf_counter()
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        sums: dict[str, float] = {}
        starts = range(0, len(train), bs)
        for start in progress(starts, f"{label} epoch {epoch}"):
            batch = train.batch(order[start : start + bs], content, config.use_min, vectors)
            losses = train_step(
                loss_fn, batch.user, batch.items, batch.labels, optimizer, disc_optimizer,
                batch.label_masks,
            )  # fmt: skip
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
        trained_rows += len(train)
        valid_auc = valid_click_auc(model, splits)
        record = {name: value / len(starts) for name, value in sums.items()}
        history.append(
            {"epoch": epoch, **record, "valid_click_auc": valid_auc,
             "lr": optimizer.param_groups[0]["lr"]}
        )  # fmt: skip
        log.info(
            "%s epoch %d: loss %.4f, valid click AUC %.4f", label, epoch, record["loss"], valid_auc
        )
        schedule.step(valid_auc)
        if valid_auc > best_auc:
            best_auc, best_state = valid_auc, copy.deepcopy(model.state_dict())
        elif epoch - _best_epoch(history) >= train_config.patience:
            break
    seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model, history, seconds, trained_rows / seconds)


def _best_epoch(history: list[dict[str, float]]) -> int:
    return int(max(history, key=lambda record: record["valid_click_auc"])["epoch"])


def valid_click_auc(model: RankingModel, splits: RankingSplits) -> float:
    """Click AUC on the valid split: what early stopping and the LR schedule follow."""
    scores = predict(model, splits.valid, splits.content, vectors=splits.vectors)["click"]
    mask = splits.valid.label_masks["click"].numpy()
    value = auc((splits.valid.labels["click"].numpy()[mask] >= 0.5), scores[mask])
    if value is None:
        raise UserError(
            "the valid split has only one click class: early stopping needs both (more valid "
            "days: --valid-days)"
        )
    return value


def evaluate_splits(
    model: RankingModel, splits: RankingSplits, names: tuple[str, ...] = ("valid", "test")
) -> dict[str, dict]:
    """{split: evaluate(...)} for the named splits."""
    return {
        name: evaluate(
            predict(model, splits[name], splits.content, vectors=splits.vectors), splits[name]
        )
        for name in names
    }


def export_metadata(
    config: RankingConfig,
    splits: RankingSplits,
    train_config: TrainConfig,
    result: FitResult,
    metrics: dict[str, dict],
) -> dict[str, Any]:
    """What ties the exported model to its data: service, versions, input layout, figures."""
    versions = (
        splits.content.versions
        if splits.content is not None
        else dict.fromkeys(CONTENT_VERSION_FIELDS, "none")
    )
    recall = {RECALL_MODEL_KEY: splits.vectors.model_tag} if config.use_recall_vector else {}
    return {
        "feature_service": FEATURE_SERVICE,
        **versions,
        **recall,
        "tasks": list(config.tasks),
        "categories": list(splits.profile.categories),
        "switches": {name: getattr(config, name) for name in SWITCHES},
        "sequence_feature": SEQUENCE_FEATURE,
        "max_seq_len": train_config.max_seq_len,
        "ctr_features": list(CTR_FEATURES),
        "pos_weight": config.pos_weight,
        "train_config": asdict(train_config),
        "train": {
            "rows": len(splits.train),
            "seconds": round(result.train_seconds, 2),
            "samples_per_s": round(result.samples_per_s, 1),
            "history": result.history,
        },
        "data_stats": {name: splits[name].stats for name in SPLITS},
        # BentoML metadata holds no None: an undefined metric (one class in its slice) is left out
        "metrics": {
            name: {k: v for k, v in headline(values).items() if v is not None}
            for name, values in metrics.items()
        },
    }


def train_ranking(
    settings: Settings,
    train_config: TrainConfig,
    switches: dict[str, bool] | None = None,
    store=None,
    recall_model: str = LATEST_RECALL_MODEL,
) -> dict[str, Any]:
    """Load, fit, evaluate, export; returns the metadata saved with the model plus its tag.
    `recall_model`: whose item vectors a ranker with `use_recall_vector` reads."""
    try:  # a bad switch combination fails before any data is read
        RankingConfig(**(switches or {}))
    except ValueError as err:
        raise UserError(f"{err} (the --multimodal/--dsn/--min switches)") from None
    vectors_of = recall_model if (switches or {}).get("use_recall_vector") else None
    splits = load_splits(settings, train_config.max_seq_len, store, vectors_of)
    config = model_config(splits, train_config, switches)
    result = fit(config, splits, train_config)
    metrics = evaluate_splits(result.model, splits)
    metadata = export_metadata(config, splits, train_config, result, metrics)
    # the train split's items are warm at serving, its users keep their user-ID embedding
    known = {
        KNOWN_ITEMS: splits.train.item_id.unique().numpy(),
        KNOWN_USERS: splits.train.user_id.unique().numpy(),
    }
    tag = save_model(settings, train_config.model_name, result.model, config, metadata, known)
    report = {"tag": tag, **metadata, "metrics_detail": metrics}
    # a model saved under another name (ranking-no-gmf) keeps its report beside the default's
    write_json(report, settings.artifacts_dir / train_config.model_name / "metrics.json")
    return report
