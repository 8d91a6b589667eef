"""Classification tags and a quality tag from light heads over text + visual embeddings.

One small model (`ContentHeads`) = the fusion projection (fusion.py) + two linear heads:
- category: multi-label over mmrec.vocab.CATEGORIES (sigmoid, BCE), trained on the labels'
  `category_tags` (the categories of the item's linked SKUs);
- quality: low / medium / high (softmax, cross-entropy) on `quality_label`.
Training is full-precision Adam with a fixed seed and early stopping on a validation slice
of the training items. Items are split into train and held-out test by a seeded permutation;
metrics on the held-out items are reported next to majority-class baselines (and, as an
ablation, the same heads trained on one modality only).

Predicted tags are the categories with probability >= 0.5, and always the most probable one
(every item has at least its primary category). The quality score is the expected grade in
[0, 1] (low = 0, medium = 0.5, high = 1).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from content.fusion import MODALITIES, FusionProjector
from mmrec.vocab import CATEGORIES, FUSED_DIM, QUALITY_LABELS, TEXT_DIM, VISUAL_DIM

log = logging.getLogger(__name__)

MODEL_NAME = "content-heads"


@dataclass(frozen=True)
class HeadConfig:
    dim: int = FUSED_DIM
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 128  # at most; small sets use smaller batches (>= 8 steps an epoch)
    max_epochs: int = 200
    max_steps: int = 3000  # whichever comes first (tiny sets have no validation slice)
    patience: int = 15
    val_share: float = 0.1  # of the training items, for early stopping
    test_share: float = 0.2  # held out for the reported metrics
    threshold: float = 0.5
    seed: int = 0
    modalities: tuple[str, ...] = MODALITIES


@dataclass
class Labels:
    """Targets aligned with the embedding rows."""

    category: np.ndarray  # (N, C) float32 multi-hot
    quality: np.ndarray  # (N,) int64 index into QUALITY_LABELS
    primary: np.ndarray  # (N,) int64 index into CATEGORIES


@dataclass
class Predictions:
    fused: np.ndarray  # (N, dim) float32, L2-normalised
    category_probs: np.ndarray  # (N, C) float32
    category_pred: np.ndarray  # (N, C) bool
    quality_probs: np.ndarray  # (N, Q) float32
    quality_pred: np.ndarray  # (N,) int64
    quality_score: np.ndarray  # (N,) float32 in [0, 1]

    def category_tags(self) -> list[list[str]]:
        """Predicted tags per item, most probable first."""
        names = np.asarray(CATEGORIES)
        tags = []
        for probs, chosen in zip(self.category_probs, self.category_pred, strict=True):
            order = np.argsort(-probs, kind="stable")
            tags.append([str(names[i]) for i in order if chosen[i]])
        return tags

    def quality_labels(self) -> list[str]:
        return [QUALITY_LABELS[i] for i in self.quality_pred]


class ContentHeads(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.fusion = FusionProjector(
            TEXT_DIM, VISUAL_DIM, config.dim, config.dropout, modalities=config.modalities
        )
        self.category = nn.Linear(config.dim, len(CATEGORIES))
        self.quality = nn.Linear(config.dim, len(QUALITY_LABELS))

    def forward(
        self, text: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fusion.hidden(text, visual)
        return self.category(h), self.quality(h)


def encode_labels(
    category_tags: list[list[str]], quality_label: list[str], primary: list[str]
) -> Labels:
    """Multi-hot categories, quality and primary indices; unknown names are an error."""
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    q_index = {q: i for i, q in enumerate(QUALITY_LABELS)}
    multi = np.zeros((len(category_tags), len(CATEGORIES)), dtype=np.float32)
    for row, tags in enumerate(category_tags):
        for tag in tags:
            if tag not in cat_index:
                raise ValueError(
                    f"unknown category tag {tag!r}; expected one of mmrec.vocab.CATEGORIES"
                )
            multi[row, cat_index[tag]] = 1.0
    unknown_q = sorted(set(quality_label) - set(q_index))
    if unknown_q:
        raise ValueError(f"unknown quality labels {unknown_q}; expected {QUALITY_LABELS}")
    return Labels(
        category=multi,
        quality=np.array([q_index[q] for q in quality_label], dtype=np.int64),
        primary=np.array([cat_index[c] for c in primary], dtype=np.int64),
    )


def split(item_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask of held-out items: a seeded permutation of the sorted ids, so the split
    depends only on which items there are, not on their order."""
    order = np.argsort(item_ids, kind="stable")
    n_out = round(len(item_ids) * share) if len(item_ids) > 1 else 0
    n_out = min(max(n_out, 1 if len(item_ids) > 1 else 0), max(len(item_ids) - 1, 0))
    picked = np.random.default_rng(seed).permutation(len(item_ids))[:n_out]
    mask = np.zeros(len(item_ids), dtype=bool)
    mask[order[picked]] = True
    return mask


def _tensors(text: np.ndarray, visual: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(text, dtype=torch.float32), torch.as_tensor(visual, dtype=torch.float32)


def _loss(model: ContentHeads, t, v, cat, qual) -> torch.Tensor:
    cat_logits, q_logits = model(t, v)
    return nn.functional.binary_cross_entropy_with_logits(
        cat_logits, cat
    ) + nn.functional.cross_entropy(q_logits, qual)


def train_heads(
    text: np.ndarray, visual: np.ndarray, labels: Labels, item_ids: np.ndarray, config: HeadConfig
) -> tuple[ContentHeads, dict[str, Any]]:
    """Fit the fusion projection and both heads on these items (seeded, early-stopped)."""
    torch.manual_seed(config.seed)
    model = ContentHeads(config)
    model.fusion.fit_visual_stats(visual)
    with torch.no_grad():  # start every tag at its prior, not at p = 0.5
        prior = labels.category.mean(axis=0).clip(1e-3, 1 - 1e-3)
        model.category.bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=torch.float32))
    val = (
        split(item_ids, config.val_share, config.seed + 1)
        if len(item_ids) >= 10
        else np.zeros(len(item_ids), bool)
    )
    fit = ~val
    t, v = _tensors(text, visual)
    cat = torch.as_tensor(labels.category)
    qual = torch.as_tensor(labels.quality)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    fit_idx = torch.as_tensor(np.flatnonzero(fit))
    val_idx = torch.as_tensor(np.flatnonzero(val))
    batch_size = min(config.batch_size, max(16, len(fit_idx) // 8))
    steps = 0
    best, best_loss, best_epoch, stale = copy.deepcopy(model.state_dict()), float("inf"), 0, 0
    history = []
    for epoch in range(config.max_epochs):
        model.train()
        for batch in fit_idx[torch.randperm(len(fit_idx), generator=gen)].split(batch_size):
            opt.zero_grad()
            loss = _loss(model, t[batch], v[batch], cat[batch], qual[batch])
            loss.backward()
            opt.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            idx = val_idx if len(val_idx) else fit_idx
            val_loss = float(_loss(model, t[idx], v[idx], cat[idx], qual[idx]))
        history.append(round(val_loss, 5))
        if val_loss < best_loss - 1e-5:
            best, best_loss, best_epoch, stale = (
                copy.deepcopy(model.state_dict()),
                val_loss,
                epoch,
                0,
            )
        else:
            stale += 1
            if stale >= config.patience:
                break
        if steps >= config.max_steps:
            break
    model.load_state_dict(best)
    model.eval()
    info = {
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "steps": steps,
        "batch_size": batch_size,
        "val_loss": best_loss,
        "n_fit": int(fit.sum()),
        "n_val": int(val.sum()),
    }
    return model, info


def predict(
    model: ContentHeads, text: np.ndarray, visual: np.ndarray, batch_size: int = 4096
) -> Predictions:
    model.eval()
    fused, cat_p, q_p = [], [], []
    with torch.inference_mode():
        for start in range(0, len(text), batch_size):
            t, v = _tensors(text[start : start + batch_size], visual[start : start + batch_size])
            fused.append(model.fusion(t, v))
            cat_logits, q_logits = model(t, v)
            cat_p.append(torch.sigmoid(cat_logits))
            q_p.append(torch.softmax(q_logits, dim=-1))
    dim = model.config.dim
    fused_np = torch.cat(fused).numpy() if fused else np.zeros((0, dim), np.float32)
    cat_np = torch.cat(cat_p).numpy() if cat_p else np.zeros((0, len(CATEGORIES)), np.float32)
    q_np = torch.cat(q_p).numpy() if q_p else np.zeros((0, len(QUALITY_LABELS)), np.float32)
    chosen = cat_np >= model.config.threshold
    if len(cat_np):
        chosen[np.arange(len(cat_np)), cat_np.argmax(axis=1)] = True
    grades = np.linspace(0.0, 1.0, len(QUALITY_LABELS), dtype=np.float32)
    return Predictions(
        fused=fused_np.astype(np.float32),
        category_probs=cat_np.astype(np.float32),
        category_pred=chosen,
        quality_probs=q_np.astype(np.float32),
        quality_pred=q_np.argmax(axis=1).astype(np.int64) if len(q_np) else np.zeros(0, np.int64),
        quality_score=(q_np @ grades).astype(np.float32),
    )


# ---- metrics ---------------------------------------------------------------------------


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def multilabel_f1(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Micro F1, macro F1 (over labels present in truth or prediction) and exact-match rate."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    tp = (truth & pred).sum(axis=0).astype(float)
    fp = (~truth & pred).sum(axis=0).astype(float)
    fn = (truth & ~pred).sum(axis=0).astype(float)
    present = (truth | pred).any(axis=0)
    per_label = [_f1(tp[j], fp[j], fn[j]) for j in np.flatnonzero(present)]
    return {
        "micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
        "macro_f1": float(np.mean(per_label)) if per_label else 0.0,
        "exact_match": float((truth == pred).all(axis=1).mean()) if len(truth) else 0.0,
    }


def multiclass(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro F1 (over classes present in truth or prediction)."""
    f1s = []
    for k in range(n_classes):
        tp, fp, fn = (
            ((pred == k) & (truth == k)).sum(),
            ((pred == k) & (truth != k)).sum(),
            ((pred != k) & (truth == k)).sum(),
        )
        if tp + fp + fn:
            f1s.append(_f1(tp, fp, fn))
    return {
        "accuracy": float((truth == pred).mean()) if len(truth) else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
    }


def evaluate(pred: Predictions, labels: Labels, train_labels: Labels) -> dict[str, Any]:
    """Held-out metrics of the heads and of majority-class baselines fitted on the train labels."""
    n_cat, n_q = len(CATEGORIES), len(QUALITY_LABELS)
    n = len(labels.quality)
    # Baselines: the most frequent tag (train) as every item's only tag; per-label majority
    # (each tag is in < half the items, so: no tag at all); the most frequent quality grade.
    top_tag = int(train_labels.category.sum(axis=0).argmax())
    top_tag_pred = np.zeros((n, n_cat), bool)
    top_tag_pred[:, top_tag] = True
    per_label_majority = np.tile(train_labels.category.mean(axis=0) > 0.5, (n, 1))
    top_q = int(np.bincount(train_labels.quality, minlength=n_q).argmax())
    return {
        "n_test": n,
        "category": {
            **multilabel_f1(labels.category, pred.category_pred),
            "primary_accuracy": float((pred.category_probs.argmax(axis=1) == labels.primary).mean())
            if n
            else 0.0,
        },
        "category_baseline_most_frequent_tag": {
            "tag": CATEGORIES[top_tag],
            **multilabel_f1(labels.category, top_tag_pred),
            "primary_accuracy": float((labels.primary == top_tag).mean()) if n else 0.0,
        },
        "category_baseline_per_label_majority": multilabel_f1(labels.category, per_label_majority),
        "quality": multiclass(labels.quality, pred.quality_pred, n_q),
        "quality_baseline_majority": {
            "label": QUALITY_LABELS[top_q],
            **multiclass(labels.quality, np.full(n, top_q), n_q),
        },
    }


# ---- the whole job: split, train, evaluate, save -----------------------------------------


@dataclass
class TrainedHeads:
    model: ContentHeads
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)


def heads_version(
    base_version: str, config: HeadConfig, item_ids: np.ndarray, labels: Labels
) -> str:
    """A digest of what the heads were trained from: encoders, config, items and their labels.
    Independent of float rounding, so the same inputs always name the same version."""
    h = hashlib.sha256()
    h.update(base_version.encode())
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    order = np.argsort(item_ids, kind="stable")
    for arr in (item_ids[order], labels.category[order], labels.quality[order]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:12]


def fit_and_evaluate(
    text: np.ndarray,
    visual: np.ndarray,
    labels: Labels,
    item_ids: np.ndarray,
    base_version: str,
    config: HeadConfig | None = None,
    ablations: bool = True,
) -> TrainedHeads:
    """Train on the non-held-out items, report held-out metrics (and one-modality ablations)."""
    config = config or HeadConfig()
    test = split(item_ids, config.test_share, config.seed)
    train = ~test

    def subset(mask: np.ndarray) -> Labels:
        return Labels(labels.category[mask], labels.quality[mask], labels.primary[mask])

    model, info = train_heads(text[train], visual[train], subset(train), item_ids[train], config)
    metrics = evaluate(predict(model, text[test], visual[test]), subset(test), subset(train))
    metrics.update(n_train=int(train.sum()), training=info, config=asdict(config))
    if ablations and len(config.modalities) > 1:
        metrics["ablations"] = {}
        for modality in config.modalities:
            solo = HeadConfig(**{**asdict(config), "modalities": (modality,)})
            m, _ = train_heads(text[train], visual[train], subset(train), item_ids[train], solo)
            scores = evaluate(predict(m, text[test], visual[test]), subset(test), subset(train))
            metrics["ablations"][f"{modality}_only"] = {
                "category": scores["category"],
                "quality": scores["quality"],
            }
    version = heads_version(base_version, config, item_ids, labels)
    return TrainedHeads(model=model, version=version, metrics=metrics)


def save(trained: TrainedHeads, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(
        {
            "state_dict": trained.model.state_dict(),
            "config": asdict(trained.model.config),
            "version": trained.version,
            "metrics": trained.metrics,
            "categories": list(CATEGORIES),
            "quality_labels": list(QUALITY_LABELS),
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load(path: Path) -> TrainedHeads:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["categories"] != list(CATEGORIES) or payload["quality_labels"] != list(
        QUALITY_LABELS
    ):
        raise ValueError(f"{path} was trained for another vocabulary; retrain it")
    cfg = payload["config"]
    config = HeadConfig(**{**cfg, "modalities": tuple(cfg["modalities"])})
    model = ContentHeads(config)
    model.load_state_dict(payload["state_dict"], strict=True)
    return TrainedHeads(model=model.eval(), version=payload["version"], metrics=payload["metrics"])
