"""`mmrec train rank-ablation`: what each ranking block buys, on one split, over seeds.

Variants are cumulative, each adding one block to the previous one (switches of
`RankingConfig`): ID-only MMoE -> + raw multimodal (text + visual projections) -> + DSN
(GMF residual) -> + MIN (GMF modality interest) -> + CDR -> full (+ timeliness). Every run
trains from scratch with the same `TrainConfig` but its own seed (init, shuffling, ID
dropout) on the train split and is scored on the test split, which no run selects on.
Output under `artifacts/ranking/`: ablation.json (every run and mean +- std per variant),
report.md (tables per task: AUC / GAUC on all, warm and cold items) and ablation.png.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.io import write_json
from mmrec.settings import Settings
from mmrec.vocab import RANKING_TASKS
from training.rank_eval import SLICES, evaluate, headline, predict
from training.rank_train import (
    SWITCHES,
    RankingSplits,
    TrainConfig,
    fit,
    load_splits,
    model_config,
)

log = logging.getLogger(__name__)

_ADDED = ("use_multimodal", "use_dsn", "use_min", "use_cdr", "use_timeliness")
VARIANT_NAMES = ("id_only", "+multimodal", "+dsn", "+min", "+cdr", "full")
# id_only has every switch off; each later variant turns on one more block, in _ADDED order.
VARIANTS: dict[str, dict[str, bool]] = {
    name: {switch: i > j for j, switch in enumerate(_ADDED)} for i, name in enumerate(VARIANT_NAMES)
}
METRICS = ("auc", "gauc")


def run_ablation(
    settings: Settings,
    train_config: TrainConfig,
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: tuple[str, ...] = VARIANT_NAMES,
    splits: RankingSplits | None = None,
    store=None,
) -> dict[str, Any]:
    """Train every variant with every seed; write and return the summary."""
    if not seeds:
        raise ValueError("the ablation needs at least one seed")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    started = time.perf_counter()
    splits = splits or load_splits(settings, train_config.max_seq_len, store)
    runs = []
    for variant in variants:
        for seed in seeds:
            config_seed = replace(train_config, seed=seed)
            config = model_config(splits, config_seed, VARIANTS[variant])
            result = fit(config, splits, config_seed, label=f"{variant} seed {seed}")
            metrics = evaluate(predict(result.model, splits.test, splits.content), splits.test)
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "train_seconds": round(result.train_seconds, 2),
                    "samples_per_s": round(result.samples_per_s, 1),
                    "final_loss": result.history[-1]["loss_tasks"],
                    "metrics": headline(metrics),
                    "test_positives": {
                        t: {s: metrics[t][s]["positives"] for s in SLICES} for t in metrics
                    },
                }
            )
            log.info("%s seed %d: %s", variant, seed, _brief(runs[-1]["metrics"]))
    summary = {
        "variants": {v: VARIANTS[v] for v in variants},
        "switch_order": list(SWITCHES),
        "seeds": list(seeds),
        "train_config": asdict(train_config),
        "data_stats": {s: splits[s].stats for s in ("train", "valid", "test")},
        "content_versions": splits.content.versions if splits.content else None,
        "runs": runs,
        "summary": summarize(runs, variants),
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }
    out = settings.artifacts_dir / "ranking"
    write_json(summary, out / "ablation.json")
    (out / "report.md").write_text(markdown_report(summary))
    plot_ablation(summary, out / "ablation.png")
    return summary


def _brief(metrics: dict[str, float | None]) -> str:
    return ", ".join(
        f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("click_") and v is not None
    )


def summarize(runs: list[dict], variants: tuple[str, ...]) -> dict[str, dict]:
    """{variant: {metric: {mean, std, n}}} over seeds; undefined (None) values are skipped
    and n says how many seeds had the metric defined."""
    out: dict[str, dict] = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        keys = mine[0]["metrics"].keys()
        stats = {}
        for key in keys:
            values = np.array([r["metrics"][key] for r in mine if r["metrics"][key] is not None])
            stats[key] = {
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                "n": len(values),
            }
        stats["train_seconds"] = {"mean": float(np.mean([r["train_seconds"] for r in mine]))}
        out[variant] = stats
    return out


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    std = f" ± {stat['std']:.3f}" if stat.get("std") is not None else ""
    return f"{stat['mean']:.3f}{std}"


def markdown_report(summary: dict[str, Any]) -> str:
    """One table per task: variants x (AUC, GAUC) on all / warm / cold test items."""
    variants = list(summary["summary"])
    tasks = sorted({k.split("_")[0] for k in summary["runs"][0]["metrics"]}, key=_task_order)
    positives = summary["runs"][0]["test_positives"]
    stats = summary["data_stats"]
    lines = [
        "# Ranking ablation",
        "",
        f"Test split, mean ± std over seeds {summary['seeds']} (std over seeds, ddof 1); "
        f"{summary['train_config']['epochs']} epochs each, batch "
        f"{summary['train_config']['batch_size']}, lr {summary['train_config']['lr']}; "
        f"whole ablation {summary['elapsed_seconds']} s. Variants are cumulative: "
        "id_only -> +multimodal -> +dsn -> +min -> +cdr -> full (+timeliness).",
        f"Rows: train {stats['train']['rows']}, test {stats['test']['rows']}.",
        "",
    ]
    for task in tasks:
        header = " | ".join(f"{m.upper()} {s}" for s in SLICES for m in METRICS)
        pos = ", ".join(f"{s} {positives[task][s]}" for s in SLICES)
        lines += [f"## {task} (test positives: {pos})", "", f"| variant | {header} |"]
        lines.append("| --- |" + " ---: |" * (len(SLICES) * len(METRICS)))
        for v in variants:
            cells = " | ".join(
                _cell(summary["summary"][v][f"{task}_{s}_{m}"]) for s in SLICES for m in METRICS
            )
            lines.append(f"| {v} | {cells} |")
        lines.append("")
    seconds = " | ".join(f"{summary['summary'][v]['train_seconds']['mean']:.1f}" for v in variants)
    lines += [
        "## Training time per run (s)",
        "",
        "| " + " | ".join(variants) + " |",
        "|" + " ---: |" * len(variants),
        f"| {seconds} |",
        "",
    ]
    return "\n".join(lines)


def _task_order(task: str) -> int:
    return RANKING_TASKS.index(task) if task in RANKING_TASKS else len(RANKING_TASKS)


def plot_ablation(summary: dict[str, Any], path: Path) -> Path:
    """Bars of mean AUC (top row) and GAUC (bottom row) per task, grouped by item slice,
    one bar per variant, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    variants = list(summary["summary"])
    tasks = sorted({k.split("_")[0] for k in summary["runs"][0]["metrics"]}, key=_task_order)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.2 * len(tasks), 6.5), sharey="row")
    width = 0.8 / len(variants)
    for row, metric in enumerate(METRICS):
        for col, task in enumerate(tasks):
            ax = axes[row][col]
            for i, v in enumerate(variants):
                stats = [summary["summary"][v][f"{task}_{s}_{metric}"] for s in SLICES]
                means = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
                errs = [s["std"] or 0.0 for s in stats]
                x = np.arange(len(SLICES)) + (i - (len(variants) - 1) / 2) * width
                ax.bar(x, means, width, yerr=errs, label=v, capsize=2)
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_xticks(np.arange(len(SLICES)), SLICES)
            ax.set_title(f"{task} {metric.upper()}")
            ax.set_ylim(0.3, 1.0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(variants), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
