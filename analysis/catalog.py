"""The feature views the analysis knows about, read from the Feast registry (never hand-typed).

The registry is the source of truth for join keys, TTLs and feature names; a JSON copy under
`data/analysis/catalog.json` lets later DuckDB sessions render their views without importing
Feast (a `mmrec sql` call stays fast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mmrec.io import read_json, write_json
from mmrec.settings import Settings


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # Feast's type name, e.g. "Float32", "Array(Int64)"

    @property
    def is_list(self) -> bool:
        return self.dtype.startswith("Array(")


@dataclass(frozen=True)
class FeatureViewInfo:
    """One batch feature view: its entity join key, TTL, features and offline source glob."""

    name: str
    join_key: str
    ttl_s: int
    features: tuple[Feature, ...]
    source_path: str  # the batch source's Parquet glob, as registered

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def refs(self) -> list[str]:
        """Feast feature references `view:feature` of every feature."""
        return [f"{self.name}:{name}" for name in self.feature_names]


def from_store(store) -> list[FeatureViewInfo]:
    """Every online feature view with a single join key and a file source, sorted by name."""
    infos = []
    for view in store.list_feature_views():
        path = getattr(view.batch_source, "path", None)
        keys = [column.name for column in view.entity_columns]
        if path is None or len(keys) != 1 or not view.online:
            continue  # nothing here has compound keys or non-file sources; skip rather than guess
        infos.append(
            FeatureViewInfo(
                name=view.name,
                join_key=keys[0],
                ttl_s=int(view.ttl.total_seconds()),
                features=tuple(Feature(f.name, str(f.dtype)) for f in view.features),
                source_path=str(path),
            )
        )
    return sorted(infos, key=lambda info: info.name)


def catalog_file(settings: Settings) -> Path:
    return settings.data_dir / "analysis" / "catalog.json"


def save(settings: Settings, infos: list[FeatureViewInfo]) -> Path:
    return write_json({"feature_views": [asdict(info) for info in infos]}, catalog_file(settings))


def load(settings: Settings) -> list[FeatureViewInfo]:
    """The saved catalog, or [] when `mmrec analyze views` has not run yet."""
    path = catalog_file(settings)
    if not path.exists():
        return []
    return [
        FeatureViewInfo(
            **{**raw, "features": tuple(Feature(**feature) for feature in raw["features"])}
        )
        for raw in read_json(path)["feature_views"]
    ]
