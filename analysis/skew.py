"""Train/serve skew check: online values vs offline point-in-time values at materialization time.

For a sample of each view's entities, Feast's point-in-time join at `end` (what a training row
stamped `end` would get) is compared with Feast's online read (what serving gets). After
`materialize(end)` the two must agree; a mismatch means the online store was written by
something else (a push, a stale or partial materialization, another code path), i.e. skew.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

import numpy as np
import pandas as pd

from analysis import AnalysisError
from analysis.catalog import FeatureViewInfo
from analysis.online_export import entity_ids
from mmrec.io import progress

log = logging.getLogger(__name__)

SKEW_COLUMNS = [
    "feature_view",
    "feature",
    "compared",
    "mismatches",
    "mismatch_rate",
    "example",
]


def _normalize(value):
    """None for missing (None, NaN, NaT); lists as lists; numpy scalars as Python scalars."""
    if value is None:
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def same(offline, online, rel_tol: float = 1e-5) -> bool:
    """Whether two feature values agree: floats within `rel_tol` (Float32 features round-trip
    through float64 on one side), lists element by element, everything else exactly.

    Hand-written because pandas/numpy equality helpers do not compare ragged lists, None
    and numbers with a tolerance in one pass.
    """
    a, b = _normalize(offline), _normalize(online)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel_tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
    return a == b


def sample_ids(info: FeatureViewInfo, sample: int, seed: int) -> list[int]:
    """Up to `sample` of the view's entity ids (seeded; all of them when there are fewer)."""
    ids = entity_ids(info)
    if sample >= len(ids):
        return ids
    return sorted(np.random.default_rng(seed).choice(ids, size=sample, replace=False).tolist())


def _compare_view(store, info: FeatureViewInfo, ids: list[int], end: datetime) -> list[dict]:
    key = info.join_key
    rows = pd.DataFrame({key: ids, "event_timestamp": pd.Timestamp(end)})
    offline = (
        store.get_historical_features(entity_df=rows, features=info.refs()).to_df().set_index(key)
    )
    online = store.get_online_features(
        features=info.refs(), entity_rows=[{key: i} for i in ids]
    ).to_dict()
    results = []
    for feature in info.feature_names:
        mismatched = [
            (entity, offline.at[entity, feature], value)
            for entity, value in zip(online[key], online[feature], strict=True)
            if not same(offline.at[entity, feature], value)
        ]
        example = None
        if mismatched:
            entity, want, got = mismatched[0]
            example = f"{key}={entity}: offline {_normalize(want)!r} online {_normalize(got)!r}"
        results.append(
            {
                "feature_view": info.name,
                "feature": feature,
                "compared": len(ids),
                "mismatches": len(mismatched),
                "mismatch_rate": round(len(mismatched) / len(ids), 4) if ids else 0.0,
                "example": example,
            }
        )
    return results


def check_skew(
    store, infos: list[FeatureViewInfo], end: datetime, sample: int = 200, seed: int = 0
) -> pd.DataFrame:
    """One row per feature: entities compared, mismatches, their rate and a first example."""
    if sample < 1:
        raise AnalysisError(f"sample must be >= 1, got {sample}")
    if end.tzinfo is None:
        raise AnalysisError(f"end {end.isoformat()} needs a time zone")
    results = []
    for info in progress(infos, "skew check"):
        ids = sample_ids(info, sample, seed)
        if ids:
            results += _compare_view(store, info, ids, end)
    frame = pd.DataFrame(results, columns=SKEW_COLUMNS)
    log.info(
        "skew check: %d features, %d with mismatches", len(frame), (frame.mismatches > 0).sum()
    )
    return frame
