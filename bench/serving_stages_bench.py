"""Where a request's in-process time goes: each part of the recall and rank stages, and the
ranker's per-request graph under PyTorch eager and under ONNX Runtime.

Runs the serving pipeline (serving.pipeline.RecommendationPipeline) on a workspace, one torch
thread (what each of the service's 2 workers gets on 2 cores), for `--requests` requests of
users drawn from the world, after a warm-up and `gc.freeze()` (what serving/service.py does):

- the stage timings the service reports (features, recall, rank, mix, total);
- the recall stage's parts: the U2V query (the user tower), the V2V / S2V neighbour lists,
  the one Milvus search (wall: it includes the index's own CPU), term recall, the fresh and
  popular fallbacks, the merge;
- the rank stage's parts: the user row, the gather of the candidates' precomputed item side,
  and `score_encoded` (the per-request graph: user and pair blocks, target attention over the
  history, the MMoE after its first layer);
- that graph exported with torch.onnx (content/onnx_backend.py, as the content encoders do)
  and run by ONNX Runtime on one thread against PyTorch on the same inputs, interleaved,
  with the largest absolute difference of the probabilities: the lever ONNX Runtime would be.

Needs the workspace's milvus-lite file free (no bento serving it).

    python -m bench.serving_stages_bench --workspace DIR [--requests 300] [--out FILE]

Writes bench/results/serving-stages.json unless --out says otherwise; medians and p99 in ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import serving.ranker as ranker_module
import serving.recall as recall_module
from bench.serving_levers_bench import pcts
from content.onnx_backend import OrtModule, export
from mmrec.settings import REPO_ROOT, Settings
from models.ranking_tensors import ItemEncoding, UserInputs
from serving.config import ServingConfig
from serving.pipeline import RecommendationPipeline
from serving.ranker_split import score_encoded
from serving.schemas import RecommendRequest

RESULTS = REPO_ROOT / "bench" / "results"


class Parts:
    """Wall time of named calls: `wrap` returns a timed stand-in for a function."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            self.ms.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            return out

        return timed


def patch(target: object, name: str, parts: Parts, label: str, undo: list) -> None:
    """Replace `target.name` by its timed stand-in; `undo` collects what restores it."""
    original = getattr(target, name)
    setattr(target, name, parts.wrap(label, original))
    undo.append((target, name, original))


class RequestGraph(torch.nn.Module):
    """`score_encoded` over flat tensors (what torch.onnx exports): the inputs of one
    captured call, in `names` order; returns (N, tasks) probabilities."""

    def __init__(self, captured: tuple) -> None:
        super().__init__()
        self.model, user, enc, histories, _, _, self.split = captured
        self.user_fields = [
            f.name for f in dataclasses.fields(UserInputs) if getattr(user, f.name) is not None
        ]
        self.enc_fields = [
            f.name for f in dataclasses.fields(ItemEncoding) if getattr(enc, f.name) is not None
        ]
        self.modalities = sorted(histories)
        self.names = [
            *(f"user_{n}" for n in self.user_fields),
            *(f"item_{n}" for n in self.enc_fields),
            *(f"history_{m}" for m in self.modalities),
            "age_hours",
            "item_first_layer",
        ]

    def flat(self, captured: tuple) -> tuple[torch.Tensor, ...]:
        _, user, enc, histories, age, first, _ = captured
        return (
            *(getattr(user, n) for n in self.user_fields),
            *(getattr(enc, n) for n in self.enc_fields),
            *(histories[m] for m in self.modalities),
            age,
            first,
        )

    def forward(self, *flat: torch.Tensor) -> torch.Tensor:
        values = dict(zip(self.names, flat, strict=True))
        user = UserInputs(**{n: values[f"user_{n}"] for n in self.user_fields})
        enc = ItemEncoding(**{n: values[f"item_{n}"] for n in self.enc_fields})
        histories = {m: values[f"history_{m}"] for m in self.modalities}
        probs = score_encoded(
            self.model,
            user,
            enc,
            histories,
            values["age_hours"],
            values["item_first_layer"],
            self.split,
        )
        return torch.stack([probs[t] for t in self.model.config.tasks], dim=1)


def graph_under_ort(captured: list[tuple], reps: int) -> dict:
    """The per-request graph under PyTorch eager vs ONNX Runtime, same inputs, interleaved."""
    graph = RequestGraph(captured[0]).eval()
    per_candidate = {n: {0: "candidates"} for n in graph.names if n.startswith("item_")}
    axes = {**per_candidate, "age_hours": {0: "candidates"}, "item_first_layer": {0: "candidates"}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "request_graph.onnx"
        started = time.perf_counter()
        export(graph, graph.flat(captured[0]), path, graph.names, "probs", axes)
        export_s = time.perf_counter() - started
        session = OrtModule(path, threads=1).session
    used = [i.name for i in session.get_inputs()]  # the exporter drops inputs the graph ignores
    eager, ort, diff = [], [], 0.0
    for _ in range(reps):
        for call in captured:
            flat = graph.flat(call)
            started = time.perf_counter()
            with torch.no_grad():
                reference = graph(*flat).numpy()
            eager.append((time.perf_counter() - started) * 1000)
            feeds = {n: t.numpy() for n, t in zip(graph.names, flat, strict=True) if n in used}
            started = time.perf_counter()
            out = session.run(None, feeds)[0]
            ort.append((time.perf_counter() - started) * 1000)
            diff = max(diff, float(np.abs(out - reference).max()))
    return {
        "export_s": round(export_s, 2),
        "pytorch_ms": pcts(eager),
        "onnxruntime_ms": pcts(ort),
        "ratio_p50": round(float(np.median(eager) / np.median(ort)), 2),
        "max_abs_diff": diff,
        "candidates_median": float(np.median([c[5].shape[0] for c in captured])),
    }


def run(pipeline: RecommendationPipeline, requests: list[RecommendRequest]) -> dict:
    """Stage timings and each part's, over `requests`; the captured `score_encoded` calls."""
    parts, undo, captured = Parts(), [], []
    stage, recall = type(pipeline.recall), recall_module
    patch(stage, "_user_vectors", parts, "recall.u2v_query", undo)
    patch(stage, "_from_lists", parts, "recall.neighbour_lists", undo)
    patch(pipeline.index, "search", parts, "recall.milvus_search", undo)
    patch(pipeline.recall.tags, "recall", parts, "recall.term", undo)
    patch(recall, "fallback_recall", parts, "recall.fresh_popular", undo)
    patch(recall, "merge_channels", parts, "recall.merge", undo)
    patch(type(pipeline.ranker), "_user", parts, "rank.user_row", undo)
    patch(ItemEncoding, "take", parts, "rank.gather_item_side", undo)
    score = parts.wrap("rank.score_encoded", score_encoded)

    def capture(*args):
        captured.append(args)
        return score(*args)

    undo.append((ranker_module, "score_encoded", ranker_module.score_encoded))
    ranker_module.score_encoded = capture
    stages: dict[str, list[float]] = {}
    try:
        for request in requests:
            for name, ms in pipeline.recommend(request).response.timings_ms.items():
                stages.setdefault(name, []).append(ms)
    finally:
        for target, name, original in reversed(undo):
            setattr(target, name, original)
    return {
        "stages_ms": {name: pcts(v) for name, v in stages.items()},
        "parts_ms": {name: pcts(v) for name, v in sorted(parts.ms.items())},
        "calls_per_request": {n: round(len(v) / len(requests), 2) for n, v in parts.ms.items()},
    }, captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving-stages.json")
    args = parser.parse_args()
    settings = Settings.from_env(args.workspace)
    torch.set_num_threads(1)
    pipeline = RecommendationPipeline(settings, ServingConfig())
    users = pd.read_parquet(settings.raw_dir / "users.parquet", columns=["user_id"]).user_id
    rng = random.Random(0)
    scenes = ("home", "inner")
    requests = [
        RecommendRequest(user_id=int(rng.choice(users.tolist())), scene=scenes[i % 2], k=20)
        for i in range(args.requests)
    ]
    for request in requests[:30]:  # warm-up: first calls allocate
        pipeline.recommend(request)
    gc.collect()
    gc.freeze()
    result, captured = run(pipeline, requests)
    result["ranker_graph"] = graph_under_ort(captured[:100], reps=3)
    result |= {"catalog_items": len(pipeline.reader.item_ids), "requests": args.requests}
    for name, v in {**result["stages_ms"], **result["parts_ms"]}.items():
        print(f"{name:26s} p50 {v['p50']:8.2f} ms  p99 {v['p99']:8.2f} ms")
    graph = result["ranker_graph"]
    print(
        f"ranker graph: PyTorch {graph['pytorch_ms']['p50']} ms, ONNX Runtime "
        f"{graph['onnxruntime_ms']['p50']} ms (x{graph['ratio_p50']}), max |diff| {graph['max_abs_diff']:.2e}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
