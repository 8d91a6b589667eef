"""Recall evaluation: Recall@20/50/100 and NDCG@50 over the whole catalog, warm vs cold.

Protocol (one positive row of the test split = one query, the clicked item its target):
- candidates: every catalog item published at the query's time (`ItemTable.publish_ts`);
  V2V and S2V target videos only (their positives are videos, training_sets/samples.py), and a
  V2V seed is not its own candidate. Items the user clicked before stay candidates (re-clicks
  are real positives in the logs).
- rank of the target: items scoring higher + half the other items scoring the same (the
  expected rank under random tie-breaking; popularity ties many items at 0 clicks).
  Recall@K = share of queries with rank < K; NDCG@50 = mean of 1 / log2(rank + 2) over
  ranks < 50 (one relevant item per query, so the ideal DCG is 1).
- cold target = an item first seen in the test days: published on or after the first test
  day (no impression can precede publication); warm = the rest.

Methods, all in one run on the same queries:
- popularity: train-split clicks per item (the u2v positives of the train split);
- content-only: cosine of raw content vectors, no training: items' fused embeddings (the
  category one-hot without content); query = the seed video's (V2V), the mean over the
  user's clicked items (U2V), the seed SKU's category one-hot against items' category tags
  (S2V);
- every trained two-tower passed in (the full model and the ID-only ablation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmrec.io import write_json
from models.recall import TwoTowerRecall, encode_items, encode_queries
from models.recall_inputs import ChannelData, ItemTable, model_query

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the Agg backend

log = logging.getLogger(__name__)

KS = (20, 50, 100)
NDCG_K = 50
METRICS = (*(f"recall@{k}" for k in KS), f"ndcg@{NDCG_K}")
SEGMENTS = ("all", "warm", "cold")
QUERY_CHUNK = 1024
# scorer(data, rows) -> (len(rows), n_items) scores of every catalog item for those queries
Scorer = Callable[[ChannelData, Tensor], Tensor]


def target_ranks(scores: Tensor, targets: Tensor, allowed: Tensor) -> Tensor:
    """Expected 0-based rank of each target among its allowed candidates.

    scores (Q, N) float; targets (Q,) int64 column of the target; allowed (Q, N) bool.
    Returns (Q,) float: #higher + (#equal - 1) / 2 among allowed items.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (Q, 1)
    higher = ((scores > target_scores) & allowed).sum(1)
    equal = ((scores == target_scores) & allowed).sum(1)
    return higher.float() + (equal.float() - 1).clamp(min=0) / 2


def ranking_metrics(ranks: np.ndarray) -> dict[str, float | int | None]:
    """Recall@K and NDCG@50 of 0-based target ranks; None for an empty slice."""
    out: dict[str, float | int | None] = {"queries": len(ranks)}
    for k in KS:
        out[f"recall@{k}"] = float(np.mean(ranks < k)) if len(ranks) else None
    gains = np.where(ranks < NDCG_K, 1.0 / np.log2(ranks + 2), 0.0)
    out[f"ndcg@{NDCG_K}"] = float(np.mean(gains)) if len(ranks) else None
    return out


def candidate_mask(data: ChannelData, rows: Tensor, table: ItemTable) -> Tensor:
    """(len(rows), N) bool: items a query may retrieve (see the module docstring)."""
    published = torch.from_numpy(table.publish_ts).unsqueeze(0) <= data.event_ts[rows].unsqueeze(1)
    if data.channel in ("v2v", "s2v"):
        published &= torch.from_numpy(table.is_video).unsqueeze(0)
    if data.channel == "v2v":
        published[torch.arange(len(rows)), data.seed_rows[rows]] = False
    return published


def channel_ranks(scorer: Scorer, data: ChannelData, table: ItemTable) -> np.ndarray:
    """Ranks of every positive row's target, QUERY_CHUNK queries at a time."""
    positives = torch.nonzero(data.labels > 0.5).squeeze(1)
    ranks = []
    for start in range(0, len(positives), QUERY_CHUNK):
        rows = positives[start : start + QUERY_CHUNK]
        scores = scorer(data, rows)
        ranks.append(target_ranks(scores, data.item_rows[rows], candidate_mask(data, rows, table)))
    return torch.cat(ranks).numpy() if ranks else np.empty(0)


def evaluate_scorer(
    scorer: Scorer, channels: dict[str, ChannelData], table: ItemTable, cold_items: np.ndarray
) -> dict[str, dict[str, dict]]:
    """{channel | "all": {segment: metrics}} of one method; cold_items (N,) bool per table row."""
    ranks, cold = {}, {}
    for channel, data in channels.items():
        ranks[channel] = channel_ranks(scorer, data, table)
        cold[channel] = cold_items[data.item_rows[data.labels > 0.5].numpy()]
    ranks["all"] = np.concatenate(list(ranks.values()))
    cold["all"] = np.concatenate(list(cold.values()))
    return {
        name: {
            "all": ranking_metrics(r),
            "warm": ranking_metrics(r[~cold[name]]),
            "cold": ranking_metrics(r[cold[name]]),
        }
        for name, r in ranks.items()
    }


# ---------------------------------------------------------------------------------------------
# Methods


def popularity_scorer(train: dict[str, ChannelData], table: ItemTable) -> Scorer:
    """Every query gets the catalog ordered by train-split clicks (u2v positives)."""
    u2v = train["u2v"]
    clicks = torch.bincount(u2v.item_rows[u2v.labels > 0.5], minlength=len(table)).float()
    return lambda data, rows: clicks.expand(len(rows), -1)


def _unit(matrix: np.ndarray) -> Tensor:
    return F.normalize(torch.from_numpy(matrix), dim=-1)


def content_scorer(table: ItemTable) -> Scorer:
    """Raw-embedding cosine, no training (see the module docstring)."""
    vectors = _unit(table.fused if table.fused is not None else table.category_one_hot)  # (N, d)
    tags = _unit(table.tags)  # (N, 12)

    def score(data: ChannelData, rows: Tensor) -> Tensor:
        if data.channel == "s2v":
            one_hot = F.one_hot(data.query.sku_category[rows], tags.shape[1]).float()
            return one_hot @ tags.T
        if data.channel == "v2v":
            return vectors[data.seed_rows[rows]] @ vectors.T
        seq_rows = data.seq_rows[rows]  # (Q, L), -1 = none
        mask = (seq_rows >= 0).unsqueeze(-1).float()
        history = vectors[seq_rows.clamp(min=0)] * mask  # (Q, L, d)
        query = F.normalize(history.sum(1), dim=-1)  # (Q, d), zero without history
        return query @ vectors.T

    return score


def model_scorer(model: TwoTowerRecall, table: ItemTable) -> Scorer:
    """Cosine of the model's query and item vectors (the Milvus search it will serve)."""
    item_vecs = encode_items(model, table.inputs(np.arange(len(table))))  # (N, out_dim)

    def score(data: ChannelData, rows: Tensor) -> Tensor:
        return encode_queries(model, data.channel, model_query(data, rows, table)) @ item_vecs.T

    return score


def cold_mask(table: ItemTable, test_start: datetime) -> np.ndarray:
    """(N,) bool: items published on or after the first test day."""
    return table.publish_ts >= int(test_start.timestamp())


def evaluate_methods(splits, models: dict[str, TwoTowerRecall]) -> dict[str, Any]:
    """Every baseline and model on the test split's positives; see the module docstring."""
    table = splits.table
    test_start = datetime.fromisoformat(f"{splits.test_days[0]}T00:00:00+00:00")
    cold = cold_mask(table, test_start)
    scorers = {
        "popularity": popularity_scorer(splits["train"], table),
        "content-only": content_scorer(table),
        **{name: model_scorer(model, table) for name, model in models.items()},
    }
    methods = {}
    for name, scorer in scorers.items():
        methods[name] = evaluate_scorer(scorer, splits["test"], table, cold)
        log.info("%s: %s", name, methods[name]["all"]["all"])
    return {
        "split": "test",
        "test_days": list(splits.test_days),
        "catalog_items": len(table),
        "cold_items": int(cold.sum()),
        "cold_rule": "published on or after the first test day",
        "methods": methods,
    }


def seed_summary(evaluations: list[dict[str, Any]], seeds) -> dict[str, Any]:
    """Mean and std (ddof 1) over runs with different seeds of every method's recall@50 and
    recall@100, per channel ("all" included) and segment: {method: {"<channel> <segment>
    <metric>": {mean, std, values}}} and the seeds."""
    summary: dict[str, Any] = {"seeds": list(seeds), "methods": {}}
    for method, first in evaluations[0]["methods"].items():
        cells = {}
        for channel, segments in first.items():
            for segment in segments:
                for metric in ("recall@50", "recall@100"):
                    values = [e["methods"][method][channel][segment][metric] for e in evaluations]
                    if any(v is None for v in values):
                        continue
                    cells[f"{channel} {segment} {metric}"] = {
                        "mean": float(np.mean(values)),
                        "std": float(np.std(values, ddof=1)),
                        "values": values,
                    }
        summary["methods"][method] = cells
    return summary


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(evaluation: dict[str, Any], title: str) -> str:
    """The report: one table over all channels by segment, one Recall@50 table per channel."""
    methods = evaluation["methods"]
    lines = [
        f"# {title}",
        "",
        f"Test split ({', '.join(evaluation['test_days'])}): "
        f"{evaluation['catalog_items']} catalog items, {evaluation['cold_items']} cold "
        f"({evaluation['cold_rule']}).",
        "",
        "| method | segment | queries | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for name, result in methods.items():
        for segment in SEGMENTS:
            row = result["all"][segment]
            values = " | ".join(_fmt(row[m]) for m in METRICS)
            lines.append(f"| {name} | {segment} | {row['queries']} | {values} |")
    channels = [c for c in next(iter(methods.values())) if c != "all"]
    if len(channels) > 1:
        lines += ["", "Recall@50 by channel (all / warm / cold):", ""]
        lines += ["| method | " + " | ".join(channels) + " |", "|---|" + "---|" * len(channels)]
        for name, result in methods.items():
            cells = [
                " / ".join(_fmt(result[c][s]["recall@50"]) for s in SEGMENTS) for c in channels
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += seed_lines(evaluation.get("seed_summary"))
    return "\n".join(lines) + "\n"


SEED_COLUMNS = (
    "all all recall@100", "all warm recall@100", "all cold recall@100", "u2v all recall@50",
    "v2v all recall@50", "s2v all recall@50",
)  # fmt: skip


def seed_lines(summary: dict[str, Any] | None) -> list[str]:
    """The over-seeds table: mean ± std of the headline cells of every method."""
    if not summary:
        return []
    any_method = next(iter(summary["methods"].values()))
    columns = [c for c in SEED_COLUMNS if c in any_method]
    lines = [
        "",
        f"Over seeds {summary['seeds']} (mean ± std; the baselines do not depend on the seed):",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, cells in summary["methods"].items():
        values = [f"{cells[c]['mean']:.3f} ± {cells[c]['std']:.3f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return lines


def plot(evaluation: dict[str, Any], path: Path, title: str) -> None:
    """Grouped bars: Recall@K per method, one panel per segment (all, warm, cold)."""
    methods = evaluation["methods"]
    fig, axes = plt.subplots(1, len(SEGMENTS), figsize=(4 * len(SEGMENTS), 3.6), sharey=True)
    width = 0.8 / len(methods)
    for ax, segment in zip(axes, SEGMENTS, strict=True):
        for i, (name, result) in enumerate(methods.items()):
            values = [result["all"][segment][f"recall@{k}"] or 0.0 for k in KS]
            ax.bar(np.arange(len(KS)) + i * width, values, width, label=name)
        ax.set_xticks(np.arange(len(KS)) + width * (len(methods) - 1) / 2, [f"@{k}" for k in KS])
        ax.set_title(f"{segment} items")
    axes[0].set_ylabel("recall")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path, title: str) -> None:
    """report.md, metrics.json and recall_at_k.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation = report["evaluation"]
    (out_dir / "report.md").write_text(markdown(evaluation, title))
    write_json(report, out_dir / "metrics.json")
    plot(evaluation, out_dir / "recall_at_k.png", title)
