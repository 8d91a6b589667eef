"""Classification tags and a quality tag from light heads over text + visual embeddings.

One small model (`ContentHeads`) = the fusion projection (fusion.py) + two linear heads:
- category: multi-label over the data's category vocabulary (the manifest's `categories`,
  mmrec.vocab.CATEGORIES for the synthetic world; sigmoid, BCE), trained on the labels'
  `category_tags`. Tags outside the vocabulary are ignored and counted (`Labels.unknown_tags`);
- quality: low / medium / high (softmax, cross-entropy) on `quality_label`, trained on the
  labelled items only, and only when at least MIN_QUALITY_LABELS training items carry a label.
  Without it the model has no quality head and predicts no quality (None: unknown).
Training is full-precision Adam with a fixed seed and early stopping on a validation slice
of the training items. Items are split into train and held-out test by a seeded permutation;
metrics on the held-out items are reported next to majority-class baselines (and, as an
ablation, the same heads trained on one modality only).

Predicted tags are the categories with probability >= 0.5, and always the most probable one
(every item has at least its primary category). The quality score is the expected grade in
[0, 1] (low = 0, medium = 0.5, high = 1). The saved model records its categories and is
loaded only for the same ones.
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
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from content.fusion import FusionProjector
from mmrec.vocab import (
    CATEGORIES,
    CONTENT_MODALITIES,
    FUSED_DIM,
    QUALITY_LABELS,
    TEXT_DIM,
    VISUAL_DIM,
)

log = logging.getLogger(__name__)

MODEL_NAME = "content-heads"
MIN_QUALITY_LABELS = 20  # labelled training items the quality head needs
NO_LABEL = -1  # Labels.quality of an unlabelled item, Labels.primary outside the vocabulary


class VocabularyMismatch(ValueError):
    """A saved model was trained for other categories or quality grades."""


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
    modalities: tuple[str, ...] = CONTENT_MODALITIES


@dataclass
class Labels:
    """Targets aligned with the embedding rows."""

    category: np.ndarray  # (N, C) float32 multi-hot over `categories`
    quality: np.ndarray  # (N,) int64 index into QUALITY_LABELS, NO_LABEL when unlabelled
    primary: np.ndarray  # (N,) int64 index into `categories`, NO_LABEL when outside it
    categories: tuple[str, ...] = CATEGORIES
    unknown_tags: dict[str, int] = field(default_factory=dict)  # ignored tag -> count

    def take(self, rows: np.ndarray) -> Labels:
        """The labels of these rows (a mask or indices)."""
        return Labels(self.category[rows], self.quality[rows], self.primary[rows], self.categories)

    @property
    def n_quality(self) -> int:
        """Items with a quality label."""
        return int((self.quality != NO_LABEL).sum())


@dataclass
class Predictions:
    fused: np.ndarray  # (N, dim) float32, L2-normalised
    category_probs: np.ndarray  # (N, C) float32, C = len(categories)
    category_pred: np.ndarray  # (N, C) bool
    quality_probs: np.ndarray | None  # (N, Q) float32; None: no quality head (unknown)
    quality_pred: np.ndarray | None  # (N,) int64
    quality_score: np.ndarray | None  # (N,) float32 in [0, 1]
    categories: tuple[str, ...] = CATEGORIES

    def category_tags(self) -> list[list[str]]:
        """Predicted tags per item, most probable first."""
        names = np.asarray(self.categories)
        tags = []
        for probs, chosen in zip(self.category_probs, self.category_pred, strict=True):
            order = np.argsort(-probs, kind="stable")
            tags.append([str(names[i]) for i in order if chosen[i]])
        return tags

    def quality_labels(self) -> list[str | None]:
        """Predicted grades; None for every item when there is no quality head."""
        if self.quality_pred is None:
            return [None] * len(self.fused)
        return [QUALITY_LABELS[i] for i in self.quality_pred]


class ContentHeads(nn.Module):
    """Fusion + a category head over `categories` + (with `quality`) a quality head."""

    def __init__(
        self, config: HeadConfig, categories: tuple[str, ...] = CATEGORIES, quality: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        self.categories = tuple(categories)
        self.fusion = FusionProjector(
            TEXT_DIM, VISUAL_DIM, config.dim, config.dropout, modalities=config.modalities
        )
        self.category = nn.Linear(config.dim, len(self.categories))
        self.quality = nn.Linear(config.dim, len(QUALITY_LABELS)) if quality else None

    def forward(
        self,
        text: torch.Tensor,
        visual: torch.Tensor | None,
        has_visual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Category logits and quality logits (None without a quality head)."""
        h = self.fusion.hidden(text, visual, has_visual)
        return self.category(h), None if self.quality is None else self.quality(h)


def encode_labels(
    category_tags: list[list[str]],
    quality_label: list[str | None],
    primary: list[str],
    categories: tuple[str, ...] = CATEGORIES,
) -> Labels:
    """Multi-hot categories over `categories`, quality and primary indices. Tags outside the
    vocabulary are ignored and counted; a null quality is NO_LABEL; a quality name outside
    QUALITY_LABELS is an error."""
    cat_index = {c: i for i, c in enumerate(categories)}
    q_index = {q: i for i, q in enumerate(QUALITY_LABELS)}
    multi = np.zeros((len(category_tags), len(categories)), dtype=np.float32)
    unknown: dict[str, int] = {}
    for row, tags in enumerate(category_tags):
        for tag in tags:
            if tag in cat_index:
                multi[row, cat_index[tag]] = 1.0
            else:
                unknown[tag] = unknown.get(tag, 0) + 1
    quality = [None if _missing(q) else q for q in quality_label]
    unknown_q = sorted({q for q in quality if q is not None} - set(q_index))
    if unknown_q:
        raise ValueError(f"unknown quality labels {unknown_q}; expected {QUALITY_LABELS}")
    return Labels(
        category=multi,
        quality=np.array([NO_LABEL if q is None else q_index[q] for q in quality], np.int64),
        primary=np.array([cat_index.get(c, NO_LABEL) for c in primary], dtype=np.int64),
        categories=tuple(categories),
        unknown_tags=dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


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


@dataclass
class _Inputs:
    """Text (N, 384), visual (N, 1280) or None (no visual modality) and the rows that have an
    image (None: all), as tensors."""

    text: torch.Tensor
    visual: torch.Tensor | None
    has_visual: torch.Tensor | None

    @classmethod
    def of(
        cls, text: np.ndarray, visual: np.ndarray | None, has_visual: np.ndarray | None
    ) -> _Inputs:
        return cls(
            torch.as_tensor(text, dtype=torch.float32),
            None if visual is None else torch.as_tensor(visual, dtype=torch.float32),
            None if has_visual is None else torch.as_tensor(has_visual, dtype=torch.bool),
        )

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, rows: torch.Tensor | slice) -> _Inputs:
        return _Inputs(
            self.text[rows],
            None if self.visual is None else self.visual[rows],
            None if self.has_visual is None else self.has_visual[rows],
        )


def _rows(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[rows]


def _loss(model: ContentHeads, x: _Inputs, cat: torch.Tensor, qual: torch.Tensor) -> torch.Tensor:
    cat_logits, q_logits = model(x.text, x.visual, x.has_visual)
    loss = nn.functional.binary_cross_entropy_with_logits(cat_logits, cat)
    if q_logits is not None:
        known = qual != NO_LABEL
        if not bool(known.all()):
            q_logits, qual = q_logits[known], qual[known]
        if len(qual):
            loss = loss + nn.functional.cross_entropy(q_logits, qual)
    return loss


def train_heads(
    text: np.ndarray,
    visual: np.ndarray | None,
    labels: Labels,
    item_ids: np.ndarray,
    config: HeadConfig,
    has_visual: np.ndarray | None = None,
) -> tuple[ContentHeads, dict[str, Any]]:
    """Fit the fusion projection and the heads on these items (seeded, early-stopped); the
    quality head only when at least MIN_QUALITY_LABELS of them have a quality label.
    `visual` None: no visual modality; `has_visual` (N,) bool: which items have an image."""
    torch.manual_seed(config.seed)
    model = ContentHeads(config, labels.categories, quality=labels.n_quality >= MIN_QUALITY_LABELS)
    model.fusion.fit_visual_stats(visual, has_visual)
    with torch.no_grad():  # start every tag at its prior, not at p = 0.5
        prior = labels.category.mean(axis=0).clip(1e-3, 1 - 1e-3)
        model.category.bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=torch.float32))
    val = (
        split(item_ids, config.val_share, config.seed + 1)
        if len(item_ids) >= 10
        else np.zeros(len(item_ids), bool)
    )
    fit = ~val
    x = _Inputs.of(text, visual, has_visual)
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
            loss = _loss(model, x[batch], cat[batch], qual[batch])
            loss.backward()
            opt.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            idx = val_idx if len(val_idx) else fit_idx
            val_loss = float(_loss(model, x[idx], cat[idx], qual[idx]))
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
    model: ContentHeads,
    text: np.ndarray,
    visual: np.ndarray | None,
    batch_size: int = 4096,
    has_visual: np.ndarray | None = None,
) -> Predictions:
    """Fused embeddings, tags and (with a quality head) quality of these items."""
    model.eval()
    x = _Inputs.of(text, visual, has_visual)
    fused, cat_p, q_p = [], [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            b = x[start : start + batch_size]
            fused.append(model.fusion(b.text, b.visual, b.has_visual))
            cat_logits, q_logits = model(b.text, b.visual, b.has_visual)
            cat_p.append(torch.sigmoid(cat_logits))
            if q_logits is not None:
                q_p.append(torch.softmax(q_logits, dim=-1))
    dim, n_cat = model.config.dim, len(model.categories)
    fused_np = torch.cat(fused).numpy() if fused else np.zeros((0, dim), np.float32)
    cat_np = torch.cat(cat_p).numpy() if cat_p else np.zeros((0, n_cat), np.float32)
    chosen = cat_np >= model.config.threshold
    if len(cat_np):
        chosen[np.arange(len(cat_np)), cat_np.argmax(axis=1)] = True
    q_np = q_pred = q_score = None
    if model.quality is not None:
        q_np = torch.cat(q_p).numpy() if q_p else np.zeros((0, len(QUALITY_LABELS)), np.float32)
        q_np = q_np.astype(np.float32)
        q_pred = q_np.argmax(axis=1).astype(np.int64) if len(q_np) else np.zeros(0, np.int64)
        q_score = (q_np @ np.linspace(0.0, 1.0, len(QUALITY_LABELS), dtype=np.float32)).astype(
            np.float32
        )
    return Predictions(
        fused=fused_np.astype(np.float32),
        category_probs=cat_np.astype(np.float32),
        category_pred=chosen,
        quality_probs=q_np,
        quality_pred=q_pred,
        quality_score=q_score,
        categories=model.categories,
    )


# ---- metrics ---------------------------------------------------------------------------


def _macro_f1(truth: np.ndarray, pred: np.ndarray, **labels: Any) -> float:
    """scikit-learn's macro F1 over the labels present in truth or prediction (a label with
    neither has no F1 and is left out of the mean: zero_division=nan); 0 when none is."""
    value = f1_score(truth, pred, average="macro", zero_division=np.nan, **labels)
    return 0.0 if np.isnan(value) else float(value)


def multilabel_f1(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Micro F1, macro F1 (over labels present in truth or prediction) and exact-match rate."""
    truth, pred = truth.astype(bool), pred.astype(bool)
    if not len(truth):
        return {"micro_f1": 0.0, "macro_f1": 0.0, "exact_match": 0.0}
    return {
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0.0)),
        "macro_f1": _macro_f1(truth, pred),
        "exact_match": float(accuracy_score(truth, pred)),  # subset accuracy on multilabel
    }


def multiclass(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro F1 (over classes present in truth or prediction)."""
    if not len(truth):
        return {"accuracy": 0.0, "macro_f1": 0.0}
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": _macro_f1(truth, pred, labels=list(range(n_classes))),
    }


def _share(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else 0.0


def evaluate(pred: Predictions, labels: Labels, train_labels: Labels) -> dict[str, Any]:
    """Held-out metrics of the heads and of majority-class baselines fitted on the train labels.
    Primary accuracy counts items whose primary category is in the vocabulary; quality (None
    without a quality head) the items with a quality label."""
    n_cat, n_q = len(labels.categories), len(QUALITY_LABELS)
    n = len(labels.quality)
    # Baselines: the most frequent tag (train) as every item's only tag; per-label majority
    # (each tag is in < half the items, so: no tag at all); the most frequent quality grade.
    top_tag = int(train_labels.category.sum(axis=0).argmax())
    top_tag_pred = np.zeros((n, n_cat), bool)
    top_tag_pred[:, top_tag] = True
    per_label_majority = np.tile(train_labels.category.mean(axis=0) > 0.5, (n, 1))
    known = labels.primary != NO_LABEL
    metrics: dict[str, Any] = {
        "n_test": n,
        "category": {
            **multilabel_f1(labels.category, pred.category_pred),
            "primary_accuracy": _share(
                pred.category_probs[known].argmax(axis=1) == labels.primary[known]
            ),
        },
        "category_baseline_most_frequent_tag": {
            "tag": labels.categories[top_tag],
            **multilabel_f1(labels.category, top_tag_pred),
            "primary_accuracy": _share(labels.primary[known] == top_tag),
        },
        "category_baseline_per_label_majority": multilabel_f1(labels.category, per_label_majority),
        "quality": None,
        "quality_baseline_majority": None,
    }
    if pred.quality_pred is not None:
        rated = labels.quality != NO_LABEL
        truth = labels.quality[rated]
        train_rated = train_labels.quality[train_labels.quality != NO_LABEL]
        top_q = int(np.bincount(train_rated, minlength=n_q).argmax())
        metrics["quality"] = multiclass(truth, pred.quality_pred[rated], n_q)
        metrics["quality_baseline_majority"] = {
            "label": QUALITY_LABELS[top_q],
            **multiclass(truth, np.full(len(truth), top_q), n_q),
        }
    return metrics


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
    if labels.categories != CATEGORIES:  # the synthetic vocabulary keeps its earlier digests
        h.update(json.dumps(list(labels.categories)).encode())
    order = np.argsort(item_ids, kind="stable")
    for arr in (item_ids[order], labels.category[order], labels.quality[order]):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:12]


def fit_and_evaluate(
    text: np.ndarray,
    visual: np.ndarray | None,
    labels: Labels,
    item_ids: np.ndarray,
    base_version: str,
    config: HeadConfig | None = None,
    ablations: bool = True,
    has_visual: np.ndarray | None = None,
) -> TrainedHeads:
    """Train on the non-held-out items, report held-out metrics (and one-modality ablations).
    `visual` None: no visual modality; `has_visual` (N,) bool: which items have an image."""
    config = config or HeadConfig()
    test = split(item_ids, config.test_share, config.seed)
    train = ~test

    def fit_and_score(cfg: HeadConfig) -> tuple[ContentHeads, dict[str, Any], dict[str, Any]]:
        model, info = train_heads(
            text[train],
            _rows(visual, train),
            labels.take(train),
            item_ids[train],
            cfg,
            has_visual=_rows(has_visual, train),
        )
        held_out = predict(
            model, text[test], _rows(visual, test), has_visual=_rows(has_visual, test)
        )
        return model, info, evaluate(held_out, labels.take(test), labels.take(train))

    model, info, metrics = fit_and_score(config)
    metrics.update(n_train=int(train.sum()), training=info, config=asdict(config))
    if ablations and len(config.modalities) > 1:
        metrics["ablations"] = {}
        for modality in config.modalities:
            _, _, scores = fit_and_score(
                HeadConfig(**{**asdict(config), "modalities": (modality,)})
            )
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
            "categories": list(trained.model.categories),
            "quality_labels": list(QUALITY_LABELS),
            "quality_head": trained.model.quality is not None,
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load(path: Path, categories: tuple[str, ...] = CATEGORIES) -> TrainedHeads:
    """A saved model, if it was trained for these categories (VocabularyMismatch if not)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["categories"] != list(categories) or payload["quality_labels"] != list(
        QUALITY_LABELS
    ):
        raise VocabularyMismatch(
            f"{path} was trained for categories {payload['categories']}, not {list(categories)}"
        )
    cfg = payload["config"]
    config = HeadConfig(**{**cfg, "modalities": tuple(cfg["modalities"])})
    model = ContentHeads(config, categories, quality=payload.get("quality_head", True))
    model.load_state_dict(payload["state_dict"], strict=True)
    return TrainedHeads(model=model.eval(), version=payload["version"], metrics=payload["metrics"])
