"""Where the GBDT baseline's click AUC comes from (issue #32), on a workspace's ranking set.

The LightGBM baseline (training/rank_gbdt.py) is refit on the click task with groups of its
columns left out, on the same rows, split and seeds:

- all: every column, as `mmrec train rank-ablation --variants gbdt` fits it;
- mmoe_inputs: only what the MMoE ranker reads too (no item click counts, watch ratio,
  quality score, duration, tag confidence, SKU / watch / engage sequence lengths, history
  length, 30-day product events);
- no_cosines: without the per-modality cosine of the candidate with the history's mean;
- mmoe_inputs_no_cosines: both left out.

If the GBDT keeps its lead with only the MMoE's inputs, the gap is the learner, not the
columns. Prints test click AUC (mean and std over seeds) and the gain share of the top
columns per group.

    python -m bench.gbdt_columns_bench --workspace DIR [--seeds 3]

Writes bench/results/gbdt-columns.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict

from mmrec.settings import REPO_ROOT, Settings
from training.rank_ablation import seed_stat
from training.rank_eval import auc
from training.rank_gbdt import (
    TABULAR_COLUMNS,
    GbdtConfig,
    fit_gbdt,
    fit_pca,
    tabular_features,
)
from training.rank_train import load_splits

RESULTS = REPO_ROOT / "bench" / "results"
# The GBDT's columns the MMoE does not read (rank_gbdt.tabular_features' names).
NOT_MMOE_INPUTS = (
    "log1p_clicks_1d", "log1p_clicks_7d", "watch_ratio_7d", "quality_score", "duration_s",
    "tag_confidence", "cdr_event_count_30d", "item_watch_seq_length", "item_engage_seq_length",
    "sku_click_seq_length", "sku_cart_seq_length", "sku_purchase_seq_length", "history_length",
)  # fmt: skip
TOP = 12  # columns listed per group, by gain


def column_groups(columns: list[str]) -> dict[str, list[str]]:
    """The column groups refit, by name (module docstring)."""
    renamed = set(NOT_MMOE_INPUTS) - set(columns)
    if renamed:  # a column renamed in rank_gbdt would otherwise stay in "mmoe_inputs"
        raise SystemExit(f"NOT_MMOE_INPUTS names columns the GBDT lacks: {sorted(renamed)}")
    cosines = {c for c in columns if c.endswith("_history_cosine")}
    return {
        "all": columns,
        "mmoe_inputs": [c for c in columns if c not in NOT_MMOE_INPUTS],
        "no_cosines": [c for c in columns if c not in cosines],
        "mmoe_inputs_no_cosines": [
            c for c in columns if c not in NOT_MMOE_INPUTS and c not in cosines
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(workspace=args.workspace)
    splits = load_splits(settings, keep_columns=TABULAR_COLUMNS)
    config = GbdtConfig()
    pca = fit_pca(splits.train, splits.content, config.pca_components)
    categories = len(splits.profile.categories)
    frames = {
        name: tabular_features(splits[name], splits.content, pca, categories)
        for name in ("train", "valid", "test")
    }
    mask = splits.test.label_masks["click"].numpy()
    labels = splits.test.labels["click"].numpy()[mask] >= 0.5
    groups = {}
    for name, columns in column_groups(list(frames["train"].columns)).items():
        runs = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            boosters, rounds = fit_gbdt(
                frames["train"][columns], splits.train, frames["valid"][columns], splits.valid,
                ("click",), seed, config,
            )  # fmt: skip
            booster = boosters["click"]
            scores = booster.predict(frames["test"][columns], num_iteration=rounds["click"])
            gain = booster.feature_importance("gain")
            top = sorted(zip(columns, gain / gain.sum(), strict=True), key=lambda kv: -kv[1])
            runs.append(
                {
                    "seed": seed,
                    "click_auc": auc(labels, scores[mask]),
                    "rounds": rounds["click"],
                    "seconds": round(time.perf_counter() - started, 1),
                    "top_gain_share": {c: round(float(share), 3) for c, share in top[:TOP]},
                }
            )
        stat = seed_stat([run["click_auc"] for run in runs])
        groups[name] = {
            "columns": len(columns),
            "left_out": sorted(set(frames["train"].columns) - set(columns)),
            "click_auc_mean": round(stat["mean"], 4),
            "click_auc_std": round(stat["std"] or 0.0, 4),
            "runs": runs,
        }
        print(
            f"{name:>24}: click AUC {stat['mean']:.3f} ± {groups[name]['click_auc_std']:.3f} "
            f"({len(columns)} columns); top {list(runs[0]['top_gain_share'])[:5]}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "gbdt-columns.json"
    result = {"workspace": str(settings.workspace), "seeds": args.seeds, "groups": groups,
              "test_rows": int(mask.sum()), "gbdt_config": asdict(config)}  # fmt: skip
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
