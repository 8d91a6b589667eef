"""Which vector backend serves a recall channel: exact search vs milvus-lite, measured.

Same clustered, L2-normalised vectors for every backend; inner-product top-k.
Backends: exact numpy (matmul + argpartition, the recall baseline), faiss IndexFlatIP (when
installed), milvus-lite 2.5.1 (C++) FLAT and IVF_FLAT embedded and through a `LiteServer`
URI, and optionally milvus-lite 3.2.x HNSW from another venv (`--lite3-python`).
Reports recall@k against exact, p50/p99 latency of single queries, of `--batch`-query calls,
and of single queries with a channel filter (material + already-seen ids).

    .venv/bin/python -m bench.vector_backends_bench --sizes 100000
    .venv/bin/python -m bench.vector_backends_bench --sizes 1000000 --backends numpy,faiss,lite25

Writes bench/results/vector_backends.json (results of earlier runs at other sizes are kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.milvus_probe import ProbeSpec, probe

RESULTS = Path(__file__).resolve().parent / "results" / "vector_backends.json"
BACKENDS = ("numpy", "faiss", "lite25", "lite25-server", "lite3")
MATERIAL_NAMES = np.array(["video", "live", "shop", "aggregated"])
MATERIAL_P = (0.4, 0.2, 0.25, 0.15)
FILTER_MATERIALS = ("video", "live")
N_SEEN = 100  # already-seen ids excluded by the filtered query, as a channel would
console = Console(width=220)


def make_vectors(n: int, n_queries: int, dim: int, clusters: int, seed: int) -> tuple:
    """(base (n, dim), material codes (n,) into MATERIAL_NAMES, queries (n_queries, dim)).

    Vectors are unit vectors around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)

    def around(count: int) -> np.ndarray:
        x = centres[rng.integers(0, clusters, count)] + 0.35 * rng.normal(size=(count, dim))
        x = x.astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    materials = rng.choice(len(MATERIAL_NAMES), size=n, p=MATERIAL_P).astype(np.int8)
    return around(n), materials, around(n_queries)


def exact_topk(
    base: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None
) -> np.ndarray:
    """Exact inner-product top-k ids (Q, k), best first; rows where `mask` is False excluded."""
    scores = queries @ base.T  # (Q, N)
    if mask is not None:
        scores[:, ~mask] = -np.inf
    part = np.argpartition(-scores, k, axis=1)[:, :k]  # (Q, k) unordered
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / k over queries."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def time_calls(call: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, batch: int) -> dict:
    """Time `call` on single queries and on batches; return ids of the singles and seconds."""
    for q in queries[:5]:
        call(q[None])
    ids, single_s = [], []
    for q in queries:
        started = time.perf_counter()
        ids.append(call(q[None])[0])
        single_s.append(time.perf_counter() - started)
    batch_s = []
    for lo in range(0, len(queries) - batch + 1, batch):
        started = time.perf_counter()
        call(queries[lo : lo + batch])
        batch_s.append(time.perf_counter() - started)
    return {"single_ids": np.array(ids), "single_s": single_s, "batch_s": batch_s}


def run_numpy(base, materials, queries, k, batch, mask, **_) -> dict:
    out = time_calls(lambda q: exact_topk(base, q, k, None), queries, batch)
    filtered = time_calls(lambda q: exact_topk(base, q, k, mask), queries, batch)
    return {**out, "filtered_ids": filtered["single_ids"], "filtered_s": filtered["single_s"]}


def run_faiss(base, materials, queries, k, batch, mask, **_) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)  # OpenMP spin-waits on a shared 2-core box inflate latency
    started = time.perf_counter()
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    build_s = time.perf_counter() - started
    allowed = faiss.IDSelectorBatch(np.flatnonzero(mask).astype(np.int64))
    params = faiss.SearchParameters(sel=allowed)
    out = time_calls(lambda q: index.search(q, k)[1], queries, batch)
    filtered = time_calls(lambda q: index.search(q, k, params=params)[1], queries, batch)
    return {
        **out,
        "build_s": build_s,
        "filtered_ids": filtered["single_ids"],
        "filtered_s": filtered["single_s"],
    }


def run_lite25(base, materials, queries, k, batch, mask, spec, expr, server, workdir, **_):
    from milvus_lite.server_manager import server_manager_instance

    from index.connection import connect
    from index.server import LiteServer

    # A fresh file per case: pymilvus keeps one embedded server per path for the process's life.
    db = Path(tempfile.mkdtemp(dir=workdir)) / f"lite25_{'srv' if server else 'emb'}.db"
    if server:
        with LiteServer(db) as srv:
            return probe(connect(srv.uri), base, materials, queries, spec, k, batch, expr)
    client = connect(str(db))
    try:
        return probe(client, base, materials, queries, spec, k, batch, expr)
    finally:
        client.close()
        server_manager_instance.release_server(str(db))  # stop its milvus process now


def run_lite3(
    base, materials, queries, k, batch, mask, spec, expr, workdir, lite3_python, timeout_s, **_
):
    """milvus-lite 3.2.x in its own venv: bench/milvus_probe.py as a subprocess (None on timeout).

    Only the first `lite3_queries` queries: it searches in pure Python (~100 ms a query)."""
    data = Path(workdir) / "vectors.npz"
    if not data.exists():
        np.savez(data, base=base, materials=materials, queries=queries)
    out = Path(workdir) / "lite3.json"
    db = Path(workdir) / "lite3.db"
    cmd = [
        lite3_python,
        str(Path(__file__).with_name("milvus_probe.py")),
        *("--data", str(data), "--uri", str(db), "--spec", json.dumps(asdict(spec))),
        *("--k", str(k), "--batch", str(batch), "--filter", expr, "--out", str(out)),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logging.warning("milvus-lite 3.2 probe ran past %.0f s; left out", timeout_s)
        return None
    if done.returncode != 0:
        raise RuntimeError(f"milvus-lite 3.2 probe failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def ms(values: list[float], q: float) -> float:
    return round(1000 * float(np.quantile(values, q)), 3) if values else float("nan")


def summarise(raw: dict, truth: np.ndarray, truth_f: np.ndarray, batch: int) -> dict:
    """Recall and latency quantiles (ms) from one backend's raw output."""
    return {
        "recall": round(recall_at_k(np.asarray(raw["single_ids"]), truth), 4),
        "recall_filtered": round(recall_at_k(np.asarray(raw["filtered_ids"]), truth_f), 4),
        "single_p50_ms": ms(raw["single_s"], 0.5),
        "single_p99_ms": ms(raw["single_s"], 0.99),
        f"batch{batch}_p50_ms": ms(raw["batch_s"], 0.5),
        f"batch{batch}_p99_ms": ms(raw["batch_s"], 0.99),
        "filtered_p50_ms": ms(raw["filtered_s"], 0.5),
        "filtered_p99_ms": ms(raw["filtered_s"], 0.99),
        "build_s": round(raw.get("build_s", 0.0), 2),
    }


def milvus_specs(n: int, nprobes: list[int], nlist: int) -> list[ProbeSpec]:
    """FLAT plus IVF_FLAT at `nlist` (0: ~4*sqrt(n) rounded to a power of two) per nprobe.

    Measured: at 100k rows milvus-lite 2.5.1 ignores nprobe (1 and 1024 give the same recall
    and latency: the rows sit in unsealed segments searched through an interim index); at 1M
    rows sealed segments carry the real IVF index and nprobe matters.
    """
    nlist = nlist or 2 ** round(math.log2(4 * math.sqrt(n)))
    ivf = [
        ProbeSpec(f"IVF_FLAT nlist={nlist} nprobe={p}", "IVF_FLAT", {"nlist": nlist}, {"nprobe": p})
        for p in nprobes
    ]
    return [ProbeSpec("FLAT", "FLAT"), *ivf]


def cases(args: argparse.Namespace, n: int) -> list[tuple[str, ProbeSpec | None, Callable, dict]]:
    """(backend, spec, runner, extra kwargs) for every backend/spec asked for."""
    wanted = args.backends
    out: list = []
    if "numpy" in wanted:
        out.append(("numpy exact", None, run_numpy, {}))
    if "faiss" in wanted:
        try:
            import faiss  # noqa: F401

            out.append(("faiss IndexFlatIP", None, run_faiss, {}))
        except ImportError:
            logging.warning("faiss is not installed; skipping it (pip install faiss-cpu)")
    for spec in milvus_specs(n, args.nprobes, args.nlist):
        if "lite25" in wanted:
            out.append(("milvus-lite 2.5.1 embedded", spec, run_lite25, {"server": False}))
        if "lite25-server" in wanted:
            out.append(("milvus-lite 2.5.1 server URI", spec, run_lite25, {"server": True}))
    if "lite3" in wanted and args.lite3_python and n <= args.lite3_max_size:
        hnsw = ProbeSpec("HNSW M=16 ef=128", "HNSW", {"M": 16, "efConstruction": 200}, {"ef": 128})
        out.append(
            ("milvus-lite 3.2.x embedded", hnsw, run_lite3, {"timeout_s": args.lite3_timeout})
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="100000", help="comma-separated collection sizes")
    parser.add_argument("--dim", type=int, default=64, help="vector dimension (recall embedding)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200, help="single queries timed")
    parser.add_argument("--batch", type=int, default=32, help="queries per batched call")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=0, help="IVF nlist; 0 = ~4*sqrt(n)")
    parser.add_argument("--nprobes", default="16,64", help="IVF nprobe values to try")
    parser.add_argument("--backends", default=",".join(BACKENDS[:-1]), help=f"of {BACKENDS}")
    parser.add_argument(
        "--lite3-python", default="", help="python of a venv with milvus-lite 3.2.x"
    )
    parser.add_argument("--lite3-max-size", type=int, default=100_000)
    parser.add_argument("--lite3-queries", type=int, default=50, help="queries for 3.2.x (slow)")
    parser.add_argument("--lite3-timeout", type=float, default=900, help="seconds for 3.2.x")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.backends = {b.strip() for b in args.backends.split(",")}
    args.nprobes = [int(p) for p in args.nprobes.split(",")]
    if unknown := args.backends - set(BACKENDS):
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for n in (int(s) for s in args.sizes.split(",")):
        base, materials, queries = make_vectors(n, args.queries, args.dim, args.clusters, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        seen = rng.choice(n, N_SEEN, replace=False)
        codes = sorted(MATERIAL_NAMES.tolist().index(m) for m in FILTER_MATERIALS)
        mask = np.isin(materials, codes)
        mask[seen] = False
        expr = f"material_code in {codes} and item_id not in {seen.tolist()}"
        truth = exact_topk(base, queries, args.k, None)
        truth_f = exact_topk(base, queries, args.k, mask)
        rows = []
        todo = cases(args, n)
        with tempfile.TemporaryDirectory() as workdir, Progress(console=console) as progress:
            task = progress.add_task(f"n={n:,}", total=len(todo))
            for backend, spec, runner, extra in todo:
                progress.update(task, description=f"n={n:,} {backend} {spec.label if spec else ''}")
                n_q = args.lite3_queries if runner is run_lite3 else len(queries)
                raw = runner(
                    base, materials, queries[:n_q], args.k, args.batch, mask,
                    spec=spec, expr=expr, workdir=workdir, lite3_python=args.lite3_python, **extra,
                )  # fmt: skip
                progress.advance(task)
                if raw is None:
                    continue
                rows.append(
                    {"backend": backend, "index": spec.label if spec else "exact", "queries": n_q}
                    | summarise(raw, truth[:n_q], truth_f[:n_q], args.batch)
                    # the machine is shared: the 1-minute load average says how quiet it was
                    | {
                        "load1": round(os.getloadavg()[0], 2),
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    }
                )
        baseline = (
            rows[0]["single_p50_ms"] if rows and rows[0]["backend"] == "numpy exact" else None
        )
        for row in rows:
            row["single_p50_vs_numpy"] = (
                round(row["single_p50_ms"] / baseline, 3) if baseline else None
            )
        # rows of earlier runs at this size survive unless this run measured the same case
        fresh = {(r["backend"], r["index"]) for r in rows}
        earlier = results.get(str(n), {}).get("rows", [])
        results[str(n)] = {
            "n": n, "dim": args.dim, "k": args.k, "queries": args.queries, "batch": args.batch,
            "clusters": args.clusters, "filter": f"material in {FILTER_MATERIALS}, {N_SEEN} seen ids excluded",
            "rows": [r for r in earlier if (r["backend"], r["index"]) not in fresh] + rows,
        }  # fmt: skip
        print_table(n, args, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {args.out}")


def print_table(n: int, args: argparse.Namespace, rows: list[dict]) -> None:
    table = Table(title=f"n={n:,} dim={args.dim} recall@{args.k} vs exact; latency ms")
    b = args.batch
    cols = ["recall", "recall_filtered", "single_p50_ms", "single_p99_ms", f"batch{b}_p50_ms",
            f"batch{b}_p99_ms", "filtered_p50_ms", "filtered_p99_ms", "build_s", "single_p50_vs_numpy"]  # fmt: skip
    for col in ["backend", "index", *cols]:
        table.add_column(col.replace("_ms", "").replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ["backend", "index", *cols]))
    console.print(table)


if __name__ == "__main__":
    main()
