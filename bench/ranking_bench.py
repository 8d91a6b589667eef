"""Ranking benchmark (issue #5), on a workspace with a built ranking set and content.

(a) Training throughput, samples/s on `--threads` CPU threads: timed train steps (the data
    gather included) of the plain ID-only MMoE (baseline), + raw multimodal, and the default
    model (DSN + MIN + CDR + timeliness + history categories + popularity); median and p99
    step time, and the cost of it as the ratio of the full model's median step time to the
    baseline's.
(b) Scoring latency: `score_candidates` for one user and 500 candidates in one forward pass,
    p50 / p99 over `--reps` requests, baseline vs full, and the ratio.

    python -m bench.ranking_bench --workspace DIR [--threads 2] [--steps 40] [--reps 200]

Writes bench/results/ranking.json. Figures depend on the load of the machine: the JSON keeps
the 1-minute load average next to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.settings import REPO_ROOT, Settings
from models.ranking import RankingModel, score_candidates
from models.ranking_loss import RankingLoss, ranking_parameter_groups, train_step
from training.rank_ablation import VARIANTS
from training.rank_train import RankingSplits, TrainConfig, load_splits, model_config

RESULTS = REPO_ROOT / "bench" / "results"
MODELS = {"id_only": VARIANTS["id_only"], "+multimodal": VARIANTS["+multimodal"], "full": {}}
BASELINE = "id_only"
N_CANDIDATES = 500


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
    }


def bench_training(splits: RankingSplits, switches: dict, batch_size: int, steps: int) -> dict:
    """Timed optimiser steps (5 warm-up steps not timed) over shuffled train batches."""
    config = model_config(splits, TrainConfig(batch_size=batch_size), switches)
    model = RankingModel(config).train()
    loss_fn = RankingLoss(model)
    ranker, disc = ranking_parameter_groups(model, lr=1e-3)
    optimizer = torch.optim.Adam(ranker)
    disc_optimizer = torch.optim.Adam(disc, lr=1e-3) if disc else None
    content = splits.content if config.use_multimodal else None
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    times = []
    for step in range(steps + 5):
        rows = order[(step * batch_size) % len(order) :][:batch_size]
        started = time.perf_counter()
        batch = splits.train.batch(rows, content, config.use_min)
        train_step(
            loss_fn, batch.user, batch.items, batch.labels, optimizer, disc_optimizer,
            batch.label_masks,
        )  # fmt: skip
        if step >= 5:
            times.append((time.perf_counter() - started) * 1000)
    median = float(np.median(times))
    return {
        "step_ms": _percentiles(times),
        "samples_per_s": round(batch_size / median * 1000, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def bench_scoring(splits: RankingSplits, switches: dict, reps: int) -> dict:
    """Latency of one user x 500 candidates, one forward pass each (10 warm-up requests)."""
    config = model_config(splits, TrainConfig(), switches)
    model = RankingModel(config).eval()
    test = splits.test
    if len(test) < N_CANDIDATES + 1:
        raise ValueError(f"the test split has {len(test)} rows, need {N_CANDIDATES + 1}")
    content = splits.content if config.use_multimodal else None
    rng = np.random.default_rng(0)
    times = []
    for rep in range(reps + 10):
        rows = torch.from_numpy(rng.choice(len(test), N_CANDIDATES + 1, replace=False))
        started = time.perf_counter()
        user = test.batch(rows[:1], content, config.use_min).user
        items = test.batch(rows[1:], content, False).items
        score_candidates(model, user, items)
        if rep >= 10:
            times.append((time.perf_counter() - started) * 1000)
    return {"latency_ms": _percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, default=None, help="default: MMREC_WORKSPACE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per model")
    parser.add_argument("--reps", type=int, default=200, help="scoring requests per model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = Settings.from_env(args.workspace)
    splits = load_splits(settings, TrainConfig().max_seq_len)
    results: dict = {
        "meta": {
            "workspace": str(settings.workspace),
            "threads": args.threads,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "reps": args.reps,
            "candidates": N_CANDIDATES,
            "train_rows": len(splits.train),
            "loadavg_1m": os.getloadavg()[0],
            "torch": torch.__version__,
        },
        "training": {},
        "scoring": {},
    }
    for name, switches in MODELS.items():
        results["training"][name] = bench_training(splits, switches, args.batch_size, args.steps)
        results["scoring"][name] = bench_scoring(splits, switches, args.reps)
    base_train = results["training"][BASELINE]["step_ms"]["p50"]
    base_score = results["scoring"][BASELINE]["latency_ms"]["p50"]
    results["ratios_vs_id_only"] = {
        name: {
            "train_step_p50": round(results["training"][name]["step_ms"]["p50"] / base_train, 2),
            "score_p50": round(results["scoring"][name]["latency_ms"]["p50"] / base_score, 2),
        }
        for name in MODELS
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ranking.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for name in MODELS:
        train, score = results["training"][name], results["scoring"][name]["latency_ms"]
        ratio = results["ratios_vs_id_only"][name]
        print(
            f"{name:>12}: train {train['samples_per_s']:>8.1f} samples/s "
            f"(step p50 {train['step_ms']['p50']:.1f} ms, x{ratio['train_step_p50']}), "
            f"score 500 p50 {score['p50']:.2f} ms p99 {score['p99']:.2f} ms "
            f"(x{ratio['score_p50']})"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
