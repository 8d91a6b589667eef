"""`mmrec train recall`: fit the two-tower recall model on the recall set, evaluate, export.

Data: the three splits of the Feast-built recall set and the catalog's item table
(models/recall_inputs.py). Loss: BCE over the 1:4 sampled rows (the talk), optionally plus an
in-batch sampled softmax over each batch's positives (`TrainConfig.softmax_weight`), logQ
corrected by each item's share of the channel's train positives (`positive_log_q`). Each
optimisation step holds rows of one channel (the query towers differ); the order of the
channels' batches is shuffled. Everything is seeded: parameter init (`RecallConfig.seed`),
row shuffling and ID dropout (`TrainConfig.seed`); single process, `settings.torch_threads`.

ID dropout: with probability `id_dropout` a training row's candidate / seed ID becomes
UNKNOWN_ITEM_ID, the ID every item without a train click wears at evaluation and serving,
so that row learns "no ID signal: trust the content fields".

Early stopping: the returned model is the epoch with the best recall@100 on the valid split
over the whole catalog; training stops `patience` epochs after it (on the small world the
best epoch is the first or second: the in-batch softmax overfits after that).

Export: the BentoML model store of the workspace (models/store.py) under
`TrainConfig.model_name`, with the feature service, the content versions (or "none" for the
ID + attribute tower), the item fields, the UNKNOWN_ITEM_ID rule and the test metrics.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from mmrec.errors import UserError
from mmrec.feast_store import open_store
from mmrec.io import progress, read_json
from mmrec.settings import Settings
from mmrec.vocab import RECALL_MODEL_NAME
from mmrec.world_manifest import data_profile, world_end
from models.recall import CHANNELS, RecallBatch, RecallConfig, RecallLoss, TwoTowerRecall
from models.recall_inputs import (
    FEATURE_SERVICE,
    SEQUENCE_FEATURE,
    UNKNOWN_ITEM_ID,
    ChannelData,
    ItemTable,
    catalog_ids,
    channel_data,
    id_buckets,
    load_item_table,
    model_query,
    read_rows,
)
from models.store import KNOWN_ITEMS, save_model

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the model's own settings live in `RecallConfig`."""

    epochs: int = 5  # at most; stops after `patience` epochs without a better valid recall
    patience: int = 2
    batch_size: int = 256
    lr: float = 2e-3
    max_seq_len: int = 20  # newest clicked items kept per user
    # share of training rows whose item / seed ID becomes UNKNOWN: 0.3 measured best for cold
    # items on the small world (test recall@100 cold 0.098 at 0.1, 0.235 at 0.3, 0.240 at 0.5,
    # all items 0.257 / 0.249 / 0.226)
    id_dropout: float = 0.3
    softmax_weight: float = 1.0  # in-batch softmax next to BCE; 0 = BCE on the 1:4 rows only
    # subtract log q(item) in the in-batch softmax (Yi et al.): without it the softmax learns
    # click / popularity and ranks popular items down (small world, test recall@100 all
    # 0.158 -> 0.257, U2V recall@50 0.064 -> 0.142)
    logq_correction: bool = True
    seed: int = 0
    model_name: str = RECALL_MODEL_NAME  # BentoML model store name

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.id_dropout < 1:
            raise UserError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.softmax_weight < 0:
            raise UserError(f"softmax_weight must be >= 0, got {self.softmax_weight}")


@dataclass
class RecallSplits:
    """{split: {channel: ChannelData}}, the shared item table and what was dropped."""

    splits: dict[str, dict[str, ChannelData]]
    table: ItemTable
    test_days: tuple[str, ...]
    stats: dict[str, dict[str, int]]

    def __getitem__(self, split: str) -> dict[str, ChannelData]:
        return self.splits[split]


@dataclass
class FitResult:
    model: TwoTowerRecall
    history: list[dict[str, float]]  # per epoch: train loss, valid BCE; last: the best epoch
    train_seconds: float
    rows_per_s: float


def load_splits(settings: Settings, max_seq_len: int = 20, store=None) -> RecallSplits:
    """Read the recall set's splits and the catalog's item features (through Feast)."""
    store = store or open_store(settings)
    profile = data_profile(settings)
    table = load_item_table(store, catalog_ids(settings), world_end(settings), profile.categories)
    splits, stats = {}, {}
    for split in SPLITS:
        rows = read_rows(settings, split)
        splits[split], stats[split] = {}, {"rows": len(rows)}
        for channel in CHANNELS:
            splits[split][channel], dropped = channel_data(rows, channel, table, max_seq_len)
            stats[split].update(dropped)
    # The ID table knows the items clicked in the train split; others wear UNKNOWN_ITEM_ID.
    train = splits["train"]
    known = np.unique(np.concatenate([d.item_id[d.labels > 0.5].numpy() for d in train.values()]))
    table.set_known(known)
    manifest = read_json(settings.training_set_dir(FEATURE_SERVICE) / "manifest.json")
    return RecallSplits(splits, table, tuple(manifest["days"]["test"]), stats)


def model_config(table: ItemTable, train_config: TrainConfig, **overrides: Any) -> RecallConfig:
    """RecallConfig for this catalog: fields by the modalities present, categories by the
    data's list, buckets by id range."""
    fields = ("id", *table.modalities, "tags")
    base = RecallConfig(
        n_categories=len(table.categories),
        n_item_buckets=id_buckets(int(table.item_id.max())),
        n_sku_buckets=id_buckets(10_000),
        item_fields=fields,
        softmax_weight=train_config.softmax_weight,
        logq_correction=train_config.logq_correction and train_config.softmax_weight > 0,
        seed=train_config.seed,
    )
    return replace(base, **overrides)


def _batch(
    data: ChannelData,
    rows: torch.Tensor,
    table: ItemTable,
    id_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    log_q: torch.Tensor | None = None,
) -> RecallBatch:
    """A RecallBatch of `rows`; with `id_dropout`, that share of candidate and V2V seed IDs
    become UNKNOWN_ITEM_ID; with `log_q` (per table row), the rows' items' log q."""
    items = table.inputs(data.item_rows[rows].numpy())
    query = model_query(data, rows, table)
    if id_dropout > 0:
        drop = torch.rand(len(rows), generator=generator) < id_dropout
        items.item_id = items.item_id.masked_fill(drop, UNKNOWN_ITEM_ID)
        if data.channel == "v2v":
            query.item_id = query.item_id.masked_fill(drop, UNKNOWN_ITEM_ID)
    item_log_q = None if log_q is None else log_q[data.item_rows[rows]]
    return RecallBatch(data.channel, query, items, data.labels[rows], item_log_q)


def positive_log_q(data: ChannelData, n_items: int) -> torch.Tensor:
    """(n_items,) log of each item's share of the channel's positive rows (add-one smoothed):
    how often it is another query's in-batch negative, for the logQ correction."""
    counts = torch.bincount(data.item_rows[data.labels > 0.5], minlength=n_items).double() + 1
    return (counts / counts.sum()).log().float()


def batch_plan(
    splits: dict[str, ChannelData], batch_size: int, generator: torch.Generator
) -> list[tuple[str, torch.Tensor]]:
    """One epoch's (channel, rows) batches: rows shuffled per channel, batches interleaved."""
    plan = []
    for channel, data in splits.items():
        order = torch.randperm(len(data), generator=generator)
        plan += [(channel, order[i : i + batch_size]) for i in range(0, len(data), batch_size)]
    return [plan[i] for i in torch.randperm(len(plan), generator=generator).tolist()]


def mean_bce(
    model: TwoTowerRecall,
    splits: dict[str, ChannelData],
    table: ItemTable,
    log_q: dict[str, torch.Tensor] | None = None,
) -> float:
    """Row-weighted BCE of the model on a split (eval mode), 4096 rows a batch; `log_q` as
    in training when the model's loss corrects by it."""
    loss_fn = RecallLoss(model)
    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for data in splits.values():
            for start in range(0, len(data), 4096):
                rows = torch.arange(start, min(start + 4096, len(data)))
                out = loss_fn(_batch(data, rows, table, log_q=(log_q or {}).get(data.channel)))
                total += float(out["loss_bce"]) * len(rows)
                n += len(rows)
    return total / max(n, 1)


def valid_recall(model: TwoTowerRecall, splits: RecallSplits) -> float:
    """Recall@100 over the whole catalog of the valid split's positives, every channel: what
    early stopping follows (the valid BCE on 1:4 sampled rows bottoms out after one epoch
    while recall still rises)."""
    from training.recall_eval import channel_ranks, model_scorer

    scorer = model_scorer(model, splits.table)
    ranks = np.concatenate(
        [channel_ranks(scorer, data, splits.table) for data in splits["valid"].values()]
    )
    return float(np.mean(ranks < 100))


def fit(
    config: RecallConfig, splits: RecallSplits, train_config: TrainConfig, label: str = "recall"
) -> FitResult:
    """Train a fresh model for `train_config.epochs` epochs; see the module docstring."""
    generator = torch.Generator().manual_seed(train_config.seed)
    model = TwoTowerRecall(config)
    loss_fn = RecallLoss(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    train, table = splits["train"], splits.table
    id_dropout = train_config.id_dropout if "id" in config.item_fields else 0.0
    history, best = [], (-1.0, 0, copy.deepcopy(model.state_dict()))
    started = time.perf_counter()
    n_rows = sum(len(d) for d in train.values())
    log_q = (
        {channel: positive_log_q(data, len(table)) for channel, data in train.items()}
        if config.logq_correction
        else {}
    )
    for epoch in range(train_config.epochs):
        model.train()
        total = 0.0
        plan = batch_plan(train, train_config.batch_size, generator)
        for channel, rows in progress(plan, f"{label} epoch {epoch + 1}"):
            batch = _batch(train[channel], rows, table, id_dropout, generator, log_q.get(channel))
            out = loss_fn(batch)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            total += out["loss"].item() * len(rows)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / n_rows,
            "valid_bce": mean_bce(model, splits["valid"], table, log_q),
            "valid_recall@100": valid_recall(model, splits),
        }
        history.append(record)
        log.info("%s epoch %d: %s", label, epoch + 1, record)
        if record["valid_recall@100"] > best[0]:
            best = (record["valid_recall@100"], epoch + 1, copy.deepcopy(model.state_dict()))
        elif epoch + 1 - best[1] >= train_config.patience:
            break
    seconds = time.perf_counter() - started
    model.load_state_dict(best[2])  # early stopping: the epoch with the best valid recall
    history.append({"best_epoch": best[1]})
    return FitResult(model.eval(), history, seconds, (len(history) - 1) * n_rows / seconds)


def export_metadata(
    config: RecallConfig,
    splits: RecallSplits,
    train_config: TrainConfig,
    result: FitResult,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """What ties the exported model to its data: service, versions, input layout, figures."""
    table = splits.table
    return {
        "feature_service": FEATURE_SERVICE,
        "item_tower": "multimodal" if table.content else "id+attributes",
        **table.versions,
        "embedding_version": (
            f"{table.versions['encoder_version']}+{table.versions['fusion_version']}"
            if table.content
            else "none"
        ),
        "item_fields": list(config.item_fields),
        "categories": list(table.categories),
        "tags_source": "item_tags.category_probs" if table.content else "item_attributes.category",
        "unknown_item_id": UNKNOWN_ITEM_ID,
        "unknown_item_rule": "items without a click in the train period",
        "items_known": table.stats.get("items_known", 0),
        "sequence_feature": SEQUENCE_FEATURE,
        "max_seq_len": train_config.max_seq_len,
        "train_config": asdict(train_config),
        "train": {
            "seconds": round(result.train_seconds, 2),
            "rows_per_s": round(result.rows_per_s, 1),
            "history": result.history,
        },
        "data_stats": {**splits.stats, "items": table.stats},
        "metrics": metrics,
    }


def train_recall(
    settings: Settings, train_config: TrainConfig, store=None, seeds: int = 1
) -> dict[str, Any]:
    """Load, fit the model and the ID-only baseline, evaluate against the baselines, export
    the model, write the report; returns the report (with the model's tag). With `seeds` > 1
    both are trained again with the next seeds and the report adds mean +- std over all
    (`seed_summary`); the first seed's model is the one exported."""
    from training.recall_eval import evaluate_methods, seed_summary, write_report

    if seeds < 1:
        raise UserError(f"seeds must be >= 1, got {seeds}")
    splits = load_splits(settings, train_config.max_seq_len, store)
    evaluations = []
    for seed in range(train_config.seed, train_config.seed + seeds):
        seeded = replace(train_config, seed=seed)
        config = model_config(splits.table, seeded)
        fitted = fit(config, splits, seeded, f"two-tower seed {seed}")
        id_only = fit(model_config(splits.table, seeded, item_fields=("id",)), splits, seeded,
                      f"id-only seed {seed}")  # fmt: skip
        evaluations.append(
            evaluate_methods(splits, {"two-tower": fitted.model, "id-only": id_only.model})
        )
        if seed == train_config.seed:
            result, first_config = fitted, config
    config, evaluation = first_config, evaluations[0]
    if seeds > 1:
        evaluation["seed_summary"] = seed_summary(
            evaluations, range(train_config.seed, train_config.seed + seeds)
        )
    headline = {
        name: value
        for name, value in evaluation["methods"]["two-tower"]["all"]["all"].items()
        if value is not None
    }
    metadata = export_metadata(config, splits, train_config, result, {"test": headline})
    known = splits.table.item_id[splits.table.model_id != UNKNOWN_ITEM_ID]
    tag = save_model(
        settings, train_config.model_name, result.model, config, metadata, {KNOWN_ITEMS: known}
    )
    report = {"tag": tag, **metadata, "evaluation": evaluation}
    write_report(report, settings.artifacts_dir / "recall", "Recall on the test split")
    return report
