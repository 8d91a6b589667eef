"""`mmrec train rank-ablation`: what each ranking block buys, on one split, over seeds.

Variants (switches of `RankingConfig`): cumulative ones, each adding one block to the previous
one: ID-only MMoE -> + raw multimodal (text + visual projections) -> + DSN (GMF residual) ->
+ MIN (GMF modality interest) -> + CDR -> + timeliness -> + the click history's category
shares -> full (+ the user's popularity taste), what `mmrec train rank` trains; "full+user_id"
adds the opt-in user ID; and leave-one-out ones, the full model without one block
("full-dsn", ...), which say what a block adds when everything else is there. On the
synthetic world every run is also scored per user group of the world's hidden modality
preferences (rank_eval.truth_groups). Every run trains from scratch with the same
`TrainConfig` but its own seed (init, shuffling, ID dropout) on the train split and is scored
on the test split, which no run selects on. Further variants name the full model with blocks
added or removed, "full" then any "+x" / "-x" of the switches (training.rank_train.SWITCHES,
"use_" left out): "full+recall_vector", "full-dsn-popularity", "full-dsn_in_min". "gbdt" is
the LightGBM baseline on the same rows, flattened (training/rank_gbdt.py).
Output under `artifacts/ranking/`: ablation.json (every run and mean +- std per variant),
report.md (tables per task: AUC / GAUC on all, warm and cold items) and ablation.png.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.errors import UserError
from mmrec.io import read_json, write_json
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL, RANKING_TASKS
from models.ranking_config import RankingConfig
from training.rank_eval import (
    SLICES,
    evaluate,
    group_metrics,
    headline,
    oracle_summary,
    predict,
    truth_groups,
)
from training.rank_train import (
    SWITCHES,
    RankingSplits,
    TrainConfig,
    fit,
    load_splits,
    model_config,
)

log = logging.getLogger(__name__)

_ADDED = (
    "use_multimodal", "use_dsn", "use_min", "use_cdr", "use_timeliness", "use_history_category",
    "use_popularity",
)  # fmt: skip
VARIANT_NAMES = (
    "id_only", "+multimodal", "+dsn", "+min", "+cdr", "+timeliness", "+history_category", "full"
)  # fmt: skip
# id_only has every switch off; each later variant turns on one more block, in _ADDED order;
# "full" (all of them) is RankingConfig's defaults: what `mmrec train rank` trains.
VARIANTS: dict[str, dict[str, bool]] = {
    name: {switch: i > j for j, switch in enumerate(_ADDED)} for i, name in enumerate(VARIANT_NAMES)
}
# leave one out: the full model without DSN, MIN, the history categories or popularity taste
VARIANTS |= {
    f"full-{switch.removeprefix('use_')}": {**VARIANTS["full"], switch: False}
    for switch in ("use_dsn", "use_min", "use_history_category", "use_popularity")
}
VARIANTS["full+user_id"] = {**VARIANTS["full"], "use_user_id": True}  # opt-in, see rank_train
GBDT = "gbdt"  # the LightGBM baseline (training/rank_gbdt.py)
# RankingConfig's default of every switch: what a variant that leaves one out trains with
_DEFAULT_SWITCHES = {f.name: f.default for f in fields(RankingConfig) if f.name in SWITCHES}
METRICS = ("auc", "gauc")


def variant_switches(name: str) -> dict[str, bool]:
    """Every switch (SWITCHES) of a variant: a named one (VARIANTS), or "full" with "+x" / "-x"
    of the switches (`use_` left out), e.g. "full-dsn+popularity"; RankingConfig's defaults
    for the switches the name leaves out. All of them, so that ablation.json says what a
    variant trained even after a default changes."""
    if name in VARIANTS:
        return {**_DEFAULT_SWITCHES, **VARIANTS[name]}
    base, *changes = re.split(r"(?=[+-])", name)
    if base != "full" or not changes:
        raise UserError(
            f"unknown variant {name!r}; known: {[*VARIANTS, GBDT]} or full with +x / -x of "
            f"{[s.removeprefix('use_') for s in SWITCHES]}"
        )
    switches = variant_switches("full")
    for change in changes:
        block = change[1:]
        switch = f"use_{block}" if f"use_{block}" in SWITCHES else block
        if switch not in SWITCHES:
            raise UserError(
                f"variant {name!r}: no block {block!r}; blocks: "
                f"{[s.removeprefix('use_') for s in SWITCHES]}"
            )
        switches[switch] = change[0] == "+"
    return switches


def run_ablation(
    settings: Settings,
    train_config: TrainConfig,
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: tuple[str, ...] = VARIANT_NAMES,
    splits: RankingSplits | None = None,
    store=None,
    recall_model: str = LATEST_RECALL_MODEL,
) -> dict[str, Any]:
    """Train every variant with every seed; write and return the summary. `recall_model`:
    whose item vectors the variants with use_recall_vector read."""
    if not seeds:
        raise UserError("the ablation needs at least one seed")
    switches = {v: variant_switches(v) for v in variants if v != GBDT}
    started = time.perf_counter()
    recall = any(s.get("use_recall_vector") for s in switches.values())
    if splits is None:
        from training.rank_gbdt import TABULAR_COLUMNS

        keep = TABULAR_COLUMNS if GBDT in variants else ()
        splits = load_splits(
            settings, train_config.max_seq_len, store, recall_model if recall else None, keep
        )
    groups = truth_groups(settings.truth_dir, splits.test)
    oracle = oracle_summary(settings.truth_dir, settings.raw_dir, splits.test, groups)
    runs = []
    for variant in variants:
        for seed in seeds:
            if variant == GBDT:
                probs, cost = _gbdt_run(splits, seed)
            else:
                probs, cost = _mmoe_run(splits, replace(train_config, seed=seed), switches[variant])
            metrics = evaluate(probs, splits.test)
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    **cost,
                    "score_ms_per_1k_rows": round(
                        1000 * cost.pop("score_seconds") / len(splits.test) * 1000, 2
                    ),
                    "metrics": headline(metrics),
                    "groups": group_metrics(probs["click"], splits.test, groups),
                    "test_positives": {
                        t: {s: metrics[t][s]["positives"] for s in SLICES} for t in metrics
                    },
                }
            )
            log.info("%s seed %d: %s", variant, seed, _brief(runs[-1]["metrics"]))
    summary = {
        "variants": {v: switches.get(v, GBDT) for v in variants},
        "switch_order": list(SWITCHES),
        "seeds": list(seeds),
        "train_config": asdict(train_config),
        "data_stats": {s: splits[s].stats for s in ("train", "valid", "test")},
        "content_versions": splits.content.versions if splits.content else None,
        "recall_model": splits.vectors.model_tag if splits.vectors is not None else None,
        "runs": runs,
        "summary": summarize(runs, variants),
        "oracle": oracle,
        "elapsed_seconds": round(time.perf_counter() - started, 1),
    }
    _write_report(settings, summary)
    return summary


# what must agree for runs of several ablation.json files to be compared in one report
_SHARED = ("train_config", "data_stats", "content_versions", "recall_model", "oracle")


def merge_ablations(settings: Settings, paths: list[Path]) -> dict[str, Any]:
    """One report from the ablation.json files of an ablation split over processes (other
    seeds or variants, on copies of one workspace): their runs, summarized together; written
    and returned like `run_ablation`'s. The files must share the data and training settings."""
    parts = []
    for path in paths:
        try:
            part = read_json(path)
        except (OSError, ValueError) as e:
            raise UserError(f"--merge: {path} is not a readable JSON file ({e})") from e
        missing = {"runs", "variants", "switch_order", "elapsed_seconds", *_SHARED} - set(part)
        runs_ok = isinstance(part.get("runs"), list) and all(
            isinstance(run, dict) and {"variant", "seed", "metrics"} <= set(run)
            for run in part["runs"]
        )
        if missing or not runs_ok:
            lacks = sorted(missing) if missing else "runs with variant, seed and metrics"
            raise UserError(f"--merge: {path} lacks {lacks}: not an ablation.json of rank-ablation")
        parts.append(part)
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for key in _SHARED:
            if part.get(key) != first.get(key):
                raise UserError(
                    f"--merge: {path} has another {key} than {paths[0]}: merge only runs of "
                    "one ablation (same workspace data and training options)"
                )
    variants: dict[str, Any] = {}
    for path, part in zip(paths, parts, strict=True):
        for name, switches in part["variants"].items():
            if variants.setdefault(name, switches) != switches:
                raise UserError(
                    f"--merge: variant {name} in {path} has other switches than in an earlier "
                    "file (a default changed between them?): rerun one of them"
                )
    runs = [run for part in parts for run in part["runs"]]
    seen: set[tuple[str, int]] = set()
    for run in runs:
        if (run["variant"], run["seed"]) in seen:
            raise UserError(f"--merge: variant {run['variant']} seed {run['seed']} ran twice")
        seen.add((run["variant"], run["seed"]))
    summary = {
        **{key: first[key] for key in ("switch_order", *_SHARED)},
        "variants": variants,
        "seeds": sorted({run["seed"] for run in runs}),
        "runs": runs,
        "summary": summarize(runs, tuple(variants)),
        "elapsed_seconds": [part["elapsed_seconds"] for part in parts],
        "merged_from": [str(path) for path in paths],
    }
    _write_report(settings, summary)
    return summary


def _write_report(settings: Settings, summary: dict[str, Any]) -> None:
    """ablation.json, report.md and ablation.png under artifacts/ranking/."""
    out = settings.artifacts_dir / "ranking"
    write_json(summary, out / "ablation.json")
    (out / "report.md").write_text(markdown_report(summary))
    plot_ablation(summary, out / "ablation.png")


def _mmoe_run(
    splits: RankingSplits, train_config: TrainConfig, switches: dict[str, bool]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one MMoE variant and score the test split: (probabilities, cost)."""
    config = model_config(splits, train_config, switches)
    result = fit(config, splits, train_config, label=f"seed {train_config.seed}")
    scoring = time.perf_counter()
    probs = predict(result.model, splits.test, splits.content, vectors=splits.vectors)
    return probs, {
        "train_seconds": round(result.train_seconds, 2),
        "samples_per_s": round(result.samples_per_s, 1),
        "epochs": len(result.history),
        "best_epoch": max(result.history, key=lambda r: r["valid_click_auc"])["epoch"],
        "valid_click_auc": [round(r["valid_click_auc"], 4) for r in result.history],
        "final_loss": result.history[-1]["loss_tasks"],
        "score_seconds": time.perf_counter() - scoring,
    }


def _gbdt_run(splits: RankingSplits, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train the GBDT baseline and score the test split: (probabilities, cost)."""
    from training.rank_gbdt import train_and_score

    probs, cost = train_and_score(splits, seed)
    return probs, {
        "train_seconds": round(cost["train_seconds"], 2),
        "epochs": None,
        "best_rounds": cost["best_rounds"],
        "features": cost["features"],
        "score_seconds": cost["score_seconds"],
    }


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
        stats = {key: seed_stat([r["metrics"][key] for r in mine]) for key in mine[0]["metrics"]}
        for group in mine[0].get("groups", {}):
            stats[f"group:{group}"] = seed_stat([r["groups"][group]["auc"] for r in mine])
        for cost in ("train_seconds", "epochs", "score_ms_per_1k_rows"):
            stats[cost] = seed_stat([r.get(cost) for r in mine])
        out[variant] = stats
    return out


def seed_stat(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, std (ddof 1) and count of the defined values (one per seed); None where undefined."""
    array = np.array([v for v in values if v is not None], dtype=float)
    return {
        "mean": float(array.mean()) if len(array) else None,
        "std": float(array.std(ddof=1)) if len(array) > 1 else None,
        "n": len(array),
    }


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
        f"at most {summary['train_config']['epochs']} epochs each (early stopping on valid "
        f"click AUC, patience {summary['train_config']['patience']}), batch "
        f"{summary['train_config']['batch_size']}, lr {summary['train_config']['lr']}; "
        f"whole ablation {summary['elapsed_seconds']} s. Variants are cumulative: "
        "id_only -> +multimodal -> +dsn -> +min -> +cdr -> +timeliness -> full (+history "
        "category); "
        "full-X is the full model without block X.",
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
    groups = [
        k.removeprefix("group:") for k in summary["summary"][variants[0]] if k.startswith("group:")
    ]
    if groups:
        lines += [
            "## click AUC by user group (the world's hidden modality preferences)",
            "",
            "| variant | " + " | ".join(groups) + " |",
            "| --- |" + " ---: |" * len(groups),
        ]
        lines += [
            f"| {v} | "
            + " | ".join(_cell(summary["summary"][v][f"group:{g}"]) for g in groups)
            + " |"
            for v in variants
        ]
        oracle = summary.get("oracle")
        if oracle:
            cells = " | ".join(_num(oracle["groups"][g]["auc"]) for g in groups)
            lines.append(f"| oracle | {cells} |")
        lines.append("")
    lines += _oracle_lines(summary.get("oracle"))
    lines += [
        "## Cost per run",
        "",
        "| variant | epochs (early stopping) | training s | scoring ms per 1,000 rows |",
        "| --- | ---: | ---: | ---: |",
    ]
    for v in variants:
        cost = summary["summary"][v]
        lines.append(
            f"| {v} | {_cell(cost['epochs'])} | {_cell(cost['train_seconds'])} | "
            f"{_cell(cost['score_ms_per_1k_rows'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _oracle_lines(oracle: dict[str, Any] | None) -> list[str]:
    """The ceiling section: the hidden utility's click metrics, and what knowing each user's
    own preference is worth to it."""
    if not oracle:
        return []
    m = oracle["metrics"]
    lines = [
        "## The ceiling: scoring the test rows with the world's hidden click utility",
        "",
        f"click AUC {_num(m['click_all_auc'])}, GAUC {_num(m['click_all_gauc'])}; warm AUC "
        f"{_num(m['click_warm_auc'])}, cold AUC {_num(m['click_cold_auc'])} (without the "
        "product-page link term, which the logs do not carry).",
        "",
        "| the oracle uses the population mean instead of each user's | click AUC | click GAUC |",
        "| --- | ---: | ---: |",
    ]
    for name, values in oracle["without_user_preference"].items():
        lines.append(f"| {name} | {_num(values['auc'])} | {_num(values['gauc'])} |")
    return [*lines, ""]


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
    fig, axes = plt.subplots(
        2, len(tasks), figsize=(max(3.2 * len(tasks), 7.0), 6.5), sharey="row", squeeze=False
    )  # 2-D even with one task (MovieLens: click only)
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
    fig.legend(handles, labels, loc="upper center", ncol=min(len(variants), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
