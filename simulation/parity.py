"""The platform's promise across its own loop: after a simulated day, the features the loop
left (offline sources built day by day, an online store written by POST /events pushes and
then materialized) equal those of a from-scratch rebuild of the same events.

`rebuild` makes a fresh workspace from the loop's inputs only: the raw data, the served-event
log and the content sources (content understanding reads no events), then runs every
pipeline day, `feast apply` and materialize. `compare` reads both: every partition of every
event-derived offline source, and every online value and its timestamp of every user, item and
SKU of the catalog, through each feature view.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from feature_pipelines import layout
from feature_pipelines.run import build_features
from mmrec.event_log import log_dir
from mmrec.feast_store import apply_repo, materialize, open_store
from mmrec.settings import Settings
from mmrec.world_manifest import world_end

ENTITY_FILES = {"user_id": "users.parquet", "item_id": "items.parquet", "sku_id": "skus.parquet"}
EXAMPLES = 5  # differences named per report


@dataclass
class ParityReport:
    """What was compared and what differed (`differences`: short descriptions)."""

    partitions: int = 0
    online_values: int = 0
    differences: list[str] = field(default_factory=list)
    n_differences: int = 0

    @property
    def equal(self) -> bool:
        return self.n_differences == 0

    def differ(self, what: str) -> None:
        self.n_differences += 1
        if len(self.differences) < EXAMPLES:
            self.differences.append(what)

    def as_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "partitions_compared": self.partitions,
            "online_values_compared": self.online_values,
            "differences": self.n_differences,
            "examples": self.differences,
        }


def embedded_settings(workspace: Path, like: Settings) -> Settings:
    """Settings of `workspace` on the embedded stores (DuckDB, SQLite, its own model store and
    milvus-lite file), whatever the environment says: a copy must never write into the
    original's Redis, Milvus or BentoML home. Threads as `like`'s."""
    return Settings(
        workspace=workspace.resolve(),
        online_store="sqlite",
        offline_store="duckdb",
        bentoml_home=None,
        milvus_uri=None,
        torch_threads=like.torch_threads,
    )


def rebuild(loop: Settings, target: Path) -> Settings:
    """A workspace at `target` (replaced) with the loop's raw data, event log and content
    sources, its features built from scratch, applied and materialized."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        loop.feature_repo, target / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")
    )
    rebuilt = embedded_settings(target, loop)
    shutil.copytree(loop.raw_dir, rebuilt.raw_dir)
    if loop.truth_dir.exists():
        shutil.copytree(loop.truth_dir, rebuilt.truth_dir)
    if log_dir(loop).exists():
        shutil.copytree(log_dir(loop), log_dir(rebuilt))
    for source in sorted(loop.offline_dir.iterdir()):
        # content understanding's sources (no events in them); not the build's own record
        # (build.json, what the last `features build` read): the rebuild starts from scratch
        if source.is_dir() and source.name not in layout.SOURCES:
            shutil.copytree(source, rebuilt.offline_dir / source.name)
    build_features(rebuilt)
    apply_repo(rebuilt)
    materialize(open_store(rebuilt), world_end(rebuilt))
    return rebuilt


def _partitions(settings: Settings, source: str) -> dict[str, Path]:
    folder = settings.offline_dir / source
    return {p.parent.name: p for p in sorted(folder.glob("*/*.parquet"))}


def _same(a: Any, b: Any) -> bool:
    """Equal values, lists and arrays element-wise, NaN equal to NaN."""
    if isinstance(a, list | tuple | np.ndarray) or isinstance(b, list | tuple | np.ndarray):
        if a is None or b is None or len(a) != len(b):
            return False
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (np.isnan(a) and np.isnan(b))
    return a == b


def compare(loop: Settings, rebuilt: Settings) -> ParityReport:
    """Offline partitions and online values of `loop` against `rebuilt` (ParityReport)."""
    report = ParityReport()
    for source in layout.SOURCES:
        mine, theirs = _partitions(loop, source), _partitions(rebuilt, source)
        for day in sorted(set(mine) ^ set(theirs)):
            report.differ(f"{source}/{day}: only in {'the loop' if day in mine else 'the rebuild'}")
        for day in sorted(set(mine) & set(theirs)):
            report.partitions += 1
            if not pq.read_table(mine[day]).equals(pq.read_table(theirs[day])):
                report.differ(f"{source}/{day}: rows differ")
    stores = open_store(loop), open_store(rebuilt)
    for view in stores[1].list_feature_views():
        key = view.entity_columns[0].name
        ids = pd.read_parquet(rebuilt.raw_dir / ENTITY_FILES[key], columns=[key])[key].tolist()
        refs = [f"{view.name}:{f.name}" for f in view.features]
        rows = [{key: i} for i in ids]
        values = [
            store.get_online_features(features=refs, entity_rows=rows).to_dict(
                include_event_timestamps=True
            )
            for store in stores
        ]
        for column in values[1]:
            if column == key:
                continue
            for entity, a, b in zip(ids, values[0][column], values[1][column], strict=True):
                report.online_values += 1
                if not _same(a, b):
                    report.differ(f"{column} of {key} {entity}: loop {a!r}, rebuild {b!r}")
    return report
