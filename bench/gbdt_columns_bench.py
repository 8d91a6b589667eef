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

`--learner mlp` fits a plain MLP on the same columns instead (the MMoE's expert and tower
widths, its Adam learning rate, batch size and early stopping, without its learning-rate
halving; categoricals one-hot, numbers scaled to
mean 0 and std 1 over train and, with `--bins`, piecewise-linear over that many quantile
bins as `mmrec train rank --bin-scalars` does): the MMoE's kind of learner without its ID
embeddings and content projections, so that the tree's lead splits into what the learner
family costs and what the MMoE's other inputs cost.

    python -m bench.gbdt_columns_bench --workspace DIR [--seeds 3] [--learner mlp --bins 8]

Writes bench/results/{gbdt,mlp}-columns.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from mmrec.settings import REPO_ROOT, Settings
from models.layers import MLP
from models.ranking import piecewise_linear
from models.ranking_config import RankingConfig
from training.rank_ablation import seed_stat
from training.rank_eval import auc
from training.rank_gbdt import (
    TABULAR_COLUMNS,
    GbdtConfig,
    fit_gbdt,
    fit_pca,
    tabular_features,
    task_labels,
)
from training.rank_train import TrainConfig, load_splits

RESULTS = REPO_ROOT / "bench" / "results"
# The GBDT's columns the MMoE does not read (rank_gbdt.tabular_features' names).
NOT_MMOE_INPUTS = (
    "log1p_clicks_1d", "log1p_clicks_7d", "watch_ratio_7d", "quality_score", "duration_s",
    "tag_confidence", "cdr_event_count_30d", "item_watch_seq_length", "item_engage_seq_length",
    "sku_click_seq_length", "sku_cart_seq_length", "sku_purchase_seq_length", "history_length",
)  # fmt: skip
TOP = 12  # columns listed per group, by gain
MLP_HIDDEN = (*RankingConfig().expert_dims, *RankingConfig().tower_dims)  # the MMoE's, stacked


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


def mlp_inputs(
    frames: dict[str, pd.DataFrame], columns: list[str], bins: int
) -> dict[str, torch.Tensor]:
    """Each split's `columns` as the MLP reads them (module docstring): numbers scaled by the
    train split's mean and std (missing: the mean), then with `bins` >= 2 piecewise-linear
    between their train quantiles; categoricals one-hot."""
    train = frames["train"][columns]
    categorical = [c for c in columns if isinstance(train[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in columns if c not in categorical]
    mean, std = train[numeric].mean(), train[numeric].std().replace(0.0, 1.0)
    edges = None
    if bins >= 2:
        scaled = ((train[numeric] - mean) / std).fillna(0.0).to_numpy()
        # numpy, not torch.quantile (as fit_scalar_inputs): every train row, beyond its size limit
        quantiles = np.quantile(scaled, np.linspace(0.0, 1.0, bins + 1), axis=0)
        edges = torch.tensor(quantiles.T, dtype=torch.float32)  # (columns, bins + 1)
    out = {}
    for name, frame in frames.items():
        x = torch.tensor(((frame[numeric] - mean) / std).fillna(0.0).to_numpy(np.float32))
        if edges is not None:
            x = piecewise_linear(x, edges)
        one_hot = [torch.tensor(pd.get_dummies(frame[c]).to_numpy(np.float32)) for c in categorical]
        out[name] = torch.cat([x, *one_hot], dim=1)
    return out


def fit_mlp(inputs: dict[str, torch.Tensor], splits, seed: int) -> tuple[np.ndarray, list[float]]:
    """Test click scores of an MLP fit on the train rows' clicks with the ranker's widths,
    learning rate, batch size and patience (module docstring), kept at its best valid epoch;
    and the valid AUC per epoch."""
    train_config = TrainConfig()
    torch.manual_seed(seed)
    net = MLP(inputs["train"].shape[1], MLP_HIDDEN, 1)
    optimiser = torch.optim.Adam(net.parameters(), lr=train_config.lr)
    mask, labels = task_labels(splits.train, "click")
    x, y = inputs["train"][torch.from_numpy(mask)], torch.from_numpy(labels).float()
    valid_mask, valid_y = task_labels(splits.valid, "click")
    history: list[float] = []
    best_state = None
    for _ in range(train_config.epochs):
        net.train()
        for batch in torch.randperm(len(x)).split(train_config.batch_size):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(x[batch]).squeeze(1), y[batch]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            scores = net(inputs["valid"][torch.from_numpy(valid_mask)]).squeeze(1).numpy()
        history.append(auc(valid_y, scores))
        if history[-1] >= max(history):
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif len(history) - 1 - int(np.argmax(history)) >= train_config.patience:
            break
    net.load_state_dict(best_state)
    with torch.no_grad():
        return net(inputs["test"]).squeeze(1).numpy(), history


def gbdt_run(frames, splits, columns: list[str], seed: int, config: GbdtConfig) -> dict:
    """One GBDT fit on `columns`: test click scores, rounds and the top columns by gain."""
    boosters, rounds = fit_gbdt(
        frames["train"][columns], splits.train, frames["valid"][columns], splits.valid,
        ("click",), seed, config,
    )  # fmt: skip
    booster = boosters["click"]
    gain = booster.feature_importance("gain")
    top = sorted(zip(columns, gain / gain.sum(), strict=True), key=lambda kv: -kv[1])
    return {
        "scores": booster.predict(frames["test"][columns], num_iteration=rounds["click"]),
        "rounds": rounds["click"],
        "top_gain_share": {c: round(float(share), 3) for c, share in top[:TOP]},
    }


def mlp_run(frames, splits, columns: list[str], seed: int, bins: int) -> dict:
    """One MLP fit on `columns`: test click scores and the valid click AUC per epoch."""
    scores, history = fit_mlp(mlp_inputs(frames, columns, bins), splits, seed)
    return {"scores": scores, "valid_click_auc": [round(v, 4) for v in history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--learner", choices=("gbdt", "mlp"), default="gbdt")
    parser.add_argument("--bins", type=int, default=0, help="mlp: quantile bins (0: none)")
    parser.add_argument("--groups", default="", help="comma list of column groups (all of them)")
    args = parser.parse_args()
    if args.seeds < 1 or args.bins < 0 or args.bins == 1:
        parser.error("--seeds must be >= 1 and --bins 0 or >= 2")
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
    all_groups = column_groups(list(frames["train"].columns))
    chosen = args.groups.split(",") if args.groups else list(all_groups)
    unknown = set(chosen) - set(all_groups)
    if unknown:
        parser.error(f"--groups: unknown {sorted(unknown)}; choose from {list(all_groups)}")
    mask, labels = task_labels(splits.test, "click")
    groups = {}
    for name in chosen:
        columns = all_groups[name]
        runs = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            if args.learner == "gbdt":
                run = gbdt_run(frames, splits, columns, seed, config)
            else:
                run = mlp_run(frames, splits, columns, seed, args.bins)
            scores = run.pop("scores")
            runs.append(
                {
                    "seed": seed,
                    "click_auc": auc(labels, scores[mask]),
                    "seconds": round(time.perf_counter() - started, 1),
                    **run,
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
            f"{name:>24}: {args.learner} click AUC {stat['mean']:.3f} ± "
            f"{groups[name]['click_auc_std']:.3f} ({len(columns)} columns, "
            f"per seed {[round(run['click_auc'], 4) for run in runs]})"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.learner}-columns.json"
    result = {"workspace": str(settings.workspace), "seeds": args.seeds, "groups": groups,
              "test_rows": int(mask.sum()), "learner": args.learner}  # fmt: skip
    if args.learner == "gbdt":
        result["gbdt_config"] = asdict(config)
    else:
        result.update(bins=args.bins, train_config=asdict(TrainConfig()), hidden=list(MLP_HIDDEN))
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
