"""Is Feast's PIT join of the `ranking` service faster when its on-demand views come in a
second, narrow call? (issue #2, bench (a))

Feast 0.67's python-mode on-demand views run `pa_table.to_pydict()` over the WHOLE joined
table of a `get_historical_features` call, item embeddings (1,664 floats a row) included.
This compares, on the same entity rows in the same process: (1) one call with the service;
(2) `mmrec.feast_store.historical_features`: the service's regular views in one call and its
on-demand views alone in a second (Feast joins only their source views), combined by a row
id. Checks both give the same values, then reports seconds (median of `--reps`) and the ratio.

    python -m bench.pit_split_bench [--workspace DIR] [--rows 20000] [--reps 3]

Writes bench/results/pit_split.json. Needs a workspace with the ranking set built.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.feast_store import historical_features, open_store
from mmrec.settings import REPO_ROOT, Settings

RESULTS = REPO_ROOT / "bench" / "results"
ROW_ID = "row"  # kept: historical_features drops only its own row id


def one_call(store, service, rows: pd.DataFrame) -> pd.DataFrame:
    return store.get_historical_features(entity_df=rows, features=service).to_df()


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists as tuples, so that frames with list columns compare with assert_frame_equal."""
    return frame.apply(
        lambda col: (
            col.map(lambda v: tuple(v) if isinstance(v, list | np.ndarray) else v)
            if col.dtype == object
            else col
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env(args.workspace)
    store = open_store(settings)
    service = store.get_feature_service("ranking_v1")
    keys = pd.read_parquet(
        settings.training_set_dir("ranking_v1") / "split=train",
        columns=["user_id", "item_id", "event_timestamp", "request_ts"],
    )
    rows = keys.sample(min(args.rows, len(keys)), random_state=0).reset_index(drop=True)
    rows[ROW_ID] = np.arange(len(rows))
    timings: dict[str, list[float]] = {"one_call": [], "split_calls": []}
    frames = {}
    for _ in range(args.reps):
        for name, fn in (("one_call", one_call), ("split_calls", historical_features)):
            started = time.perf_counter()
            frame = fn(store, service, rows)
            frames[name] = frame.sort_values(ROW_ID).reset_index(drop=True)
            timings[name].append(time.perf_counter() - started)
    a, b = frames["one_call"], frames["split_calls"]
    assert set(a.columns) == set(b.columns), set(a.columns) ^ set(b.columns)
    pd.testing.assert_frame_equal(comparable(a), comparable(b[a.columns]), check_dtype=False)
    medians = {name: round(float(np.median(v)), 2) for name, v in timings.items()}
    result = {
        "rows": len(rows),
        "reps": args.reps,
        "seconds_median": medians,
        "ratio_one_over_split": round(medians["one_call"] / medians["split_calls"], 2),
        "same_values": True,
    }
    print(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pit_split.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
