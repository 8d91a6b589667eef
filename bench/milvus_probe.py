"""Build one Milvus collection and time searches on it; used in-process and as a subprocess.

Needs only numpy + pymilvus so that `vector_backends_bench.py` can run it under another
virtual environment (milvus-lite 3.2.x in a throwaway venv) with:

    OTHER_VENV/bin/python bench/milvus_probe.py --data D.npz --uri U.db --spec JSON --out R.json

The in-process path (milvus-lite 2.5.1 embedded or by server URI) imports `probe()`.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

INSERT_BATCH = 10_000


@dataclass(frozen=True)
class ProbeSpec:
    """One index configuration: Milvus index type/params and search params (e.g. nprobe)."""

    label: str
    index_type: str
    index_params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)


def _create(client, name: str, base: np.ndarray, materials: np.ndarray, spec: ProbeSpec) -> float:
    """Create `name` with item_id/vector/material, insert `base`, index and load; return build s."""
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("item_id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=base.shape[1])
    schema.add_field("material_code", DataType.INT8)  # as index.schema: filters compare ints
    started = time.perf_counter()
    client.create_collection(name, schema=schema)
    for lo in range(0, len(base), INSERT_BATCH):
        hi = min(lo + INSERT_BATCH, len(base))
        rows = [
            {"item_id": i, "vector": base[i], "material_code": int(materials[i])}
            for i in range(lo, hi)
        ]
        client.insert(name, rows)
    params = client.prepare_index_params()
    params.add_index(
        "vector", index_type=spec.index_type, metric_type="IP", params=dict(spec.index_params)
    )
    client.create_index(name, params)
    client.load_collection(name)
    return time.perf_counter() - started


def _search(client, name: str, queries: np.ndarray, k: int, spec: ProbeSpec, expr: str) -> tuple:
    """One search call; return (ids (Q, <=k) padded with -1, seconds)."""
    started = time.perf_counter()
    hits = client.search(
        name,
        data=[q for q in queries],
        limit=k,
        filter=expr,
        output_fields=["item_id"],  # 3.2.x returns the vector too unless told otherwise
        search_params={"metric_type": "IP", "params": dict(spec.search_params)},
    )
    elapsed = time.perf_counter() - started
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, hit in enumerate(hits):
        # 2.5.x names the primary key "id" in a hit, 3.2.x by its field name.
        got = [h["id"] if "id" in h else h["item_id"] for h in hit]
        ids[row, : len(got)] = got
    return ids, elapsed


def probe(
    client,
    base: np.ndarray,
    materials: np.ndarray,
    queries: np.ndarray,
    spec: ProbeSpec,
    k: int,
    batch: int,
    filter_expr: str,
    name: str = "bench_vectors",
) -> dict:
    """Build, then time single-query and `batch`-query searches, plus filtered singles.

    Returns {"build_s", "single_s": [...], "batch_s": [...], "single_ids", "filtered_ids"}
    (ids as lists of lists, -1 for a missing hit) for the caller to score.
    """
    build_s = _create(client, name, base, materials, spec)
    for q in queries[:5]:  # warm-up: first searches pay for loading
        _search(client, name, q[None], k, spec, "")
    single_ids, single_s = [], []
    for q in queries:
        ids, sec = _search(client, name, q[None], k, spec, "")
        single_ids.append(ids[0].tolist())
        single_s.append(sec)
    batch_s = []
    for lo in range(0, len(queries) - batch + 1, batch):
        batch_s.append(_search(client, name, queries[lo : lo + batch], k, spec, "")[1])
    filtered_ids, filtered_s = [], []
    for q in queries:
        ids, sec = _search(client, name, q[None], k, spec, filter_expr)
        filtered_ids.append(ids[0].tolist())
        filtered_s.append(sec)
    client.drop_collection(name)
    return {
        "build_s": build_s,
        "single_s": single_s,
        "batch_s": batch_s,
        "filtered_s": filtered_s,
        "single_ids": single_ids,
        "filtered_ids": filtered_ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", required=True, help="npz with base, materials (int codes), queries"
    )
    parser.add_argument("--uri", required=True, help="Milvus URI (a fresh .db file)")
    parser.add_argument("--spec", required=True, help="ProbeSpec as JSON")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--filter", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from pymilvus import MilvusClient

    data = np.load(args.data, allow_pickle=False)
    result = probe(
        MilvusClient(args.uri),
        data["base"],
        data["materials"],
        data["queries"],
        ProbeSpec(**json.loads(args.spec)),
        args.k,
        args.batch,
        args.filter,
    )
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
