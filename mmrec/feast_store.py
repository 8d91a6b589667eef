"""Opening, applying and materializing the Feast feature store of a workspace.

`feast apply` runs as a subprocess in the feature repo, exactly as a user would run it: Feast
imports the repo's modules by name and changes directory while applying, which must not
leak into the calling process.
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template

from mmrec.errors import UserError
from mmrec.settings import Settings

log = logging.getLogger(__name__)


class FeatureStoreError(UserError):
    """The feature store cannot do what was asked; the message says what to run first."""


# feature_store*.yaml per (offline store, online store). Each offline profile keeps its own
# registry: a registry stores its sources, and the Spark store reads only SparkSources.
PROFILES = {
    ("duckdb", "sqlite"): "feature_store.yaml",
    ("duckdb", "redis"): "feature_store.redis.yaml",
    ("spark", "sqlite"): "feature_store.spark.yaml",
    ("spark", "redis"): "feature_store.spark.redis.yaml",
}


def store_yaml(settings: Settings) -> Path:
    """The feature_store*.yaml of the selected offline- and online-store profile."""
    return settings.feature_repo / PROFILES[(settings.offline_store, settings.online_store)]


def feast_env(settings: Settings) -> dict[str, str]:
    """The environment of a `feast` child process: ours plus the settings' (MMREC_REDIS_URL
    feeds the redis profile's yaml, MMREC_OFFLINE_STORE picks the sources' type in
    feature_repo/data_sources.py)."""
    return {**os.environ, **settings.environment()}


def repo_config(settings: Settings):
    """The profile's feature_store*.yaml as Feast's RepoConfig, its ${VARS} taken from the
    settings (Feast's own loader takes them from os.environ, which we do not write)."""
    import yaml
    from feast.repo_config import RepoConfig

    text = Template(store_yaml(settings).read_text()).safe_substitute(settings.environment())
    config = RepoConfig(**yaml.safe_load(text))
    config.repo_path = settings.feature_repo
    return config


def open_store(settings: Settings):
    """A FeatureStore for the workspace; reuse one per process (it caches the registry)."""
    from feast import FeatureStore

    flag = (
        "" if settings.offline_store == "duckdb" else f" --offline-store {settings.offline_store}"
    )
    if not store_yaml(settings).exists():
        raise FeatureStoreError(
            f"no {store_yaml(settings).name} in {settings.feature_repo}: copy the repository's "
            f"feature_repo/ into the workspace, then run `mmrec features apply{flag}`"
        )
    config = repo_config(settings)
    registry = Path(config.registry.path)
    registry = registry if registry.is_absolute() else settings.feature_repo / registry
    if not registry.exists():
        raise FeatureStoreError(
            f"no feature registry {registry.name} in {registry.parent}: "
            f"run `mmrec features apply{flag}` first"
        )
    return FeatureStore(repo_path=str(settings.feature_repo), config=config)


def apply_repo(settings: Settings) -> str:
    """`feast apply` the workspace's feature repo; returns Feast's summary lines."""
    (settings.data_dir / "feast").mkdir(parents=True, exist_ok=True)
    feast_cli = Path(sys.executable).parent / "feast"  # the venv's, whether or not it is activated
    cmd = [str(feast_cli), "-f", str(store_yaml(settings)), "apply"]
    result = subprocess.run(
        cmd, cwd=settings.feature_repo, env=feast_env(settings), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise FeatureStoreError(f"feast apply failed:\n{result.stderr[-4000:]}")
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if line.startswith(("Created", "Deleted", "Updated", "No changes"))
    )


def _source_has_files(view) -> bool:
    """Whether a file-backed view's source path (a glob) matches any file."""
    path = getattr(view.batch_source, "path", None)
    return path is None or bool(glob.glob(path))


# The start of a materialize window for a view whose TTL is 0 (Feast: its values never
# expire): the earliest time the data contract accepts (ingest/readers.py).
BEGINNING = datetime(1678, 1, 1, tzinfo=UTC)


def validity_start(ttl: timedelta | None, end: datetime) -> datetime:
    """The earliest time a value valid at `end` can have, for a view's TTL (0 or None:
    forever, Feast's convention): where a point-in-time join at `end` looks back to."""
    return end - ttl if ttl else BEGINNING


def materialize(store, end: datetime, views: list[str] | None = None) -> dict[str, datetime]:
    """Load each feature view's latest rows valid at `end` into the online store; returns
    each view's window start.

    Per view, the window is [validity_start(ttl, end), end), so the online store holds what a
    point-in-time join at `end` returns (Feast's online reads do not apply TTL themselves).
    Re-running is safe: the online store keeps the latest row per entity.
    """
    known = {view.name: view for view in store.list_feature_views()}
    unknown = sorted(set(views or []) - set(known))
    if unknown:
        raise FeatureStoreError(f"unknown feature views {unknown}; known: {sorted(known)}")
    chosen = views or sorted(known)
    empty = [name for name in chosen if not _source_has_files(known[name])]
    if empty:
        raise FeatureStoreError(
            f"feature views {empty} have no offline data yet: run the stage that writes them "
            "(`mmrec features build`, `mmrec content encode`) or pass --view for the others"
        )
    windows = {}
    for name in chosen:
        start = validity_start(known[name].ttl, end)
        store.materialize(start_date=start, end_date=end, feature_views=[name])
        windows[name] = start
    return windows


ON_DEMAND = "on_demand"


def service_refs_by_entity(store, service) -> dict[str, list[str]]:
    """A feature service's `view:feature` refs grouped by what each view is keyed on.

    Keys are the entity names joined by "," ("user", "item", "sku"); on-demand views, which
    have no entity of their own, come under ON_DEMAND.
    """
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    groups: dict[str, list[str]] = {}
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            key = ON_DEMAND
        else:
            key = ",".join(store.get_feature_view(projection.name).entities)
        name = projection.name_to_use()
        groups.setdefault(key, []).extend(f"{name}:{f.name}" for f in projection.features)
    return groups


ROW_ID = "_mmrec_row"


def historical_features(store, service, entity_df):
    """`get_historical_features` of a feature service, its on-demand views in a second call.

    Feast 0.67's python-mode on-demand views run `to_pydict()` over the whole joined table of a
    call, item embeddings (1,664 floats a row) included; asked alone, they join only their
    source views. Same values, 3.9-5.2x faster on 20k rows of the `ranking` service
    (bench/pit_split_bench.py). Returns the entity rows in their order with every feature of
    the service; the entity rows' timestamp columns are the ones given, whatever the offline
    store hands back (Spark returns them zone-less, as datetime64[ns] in UTC wall time). Other
    entity columns come back as the store has them (DuckDB: nullable labels as float NaN).
    """
    from pandas.api.types import is_datetime64_any_dtype

    groups = service_refs_by_entity(store, service)
    on_demand = groups.pop(ON_DEMAND, [])
    plain = [ref for refs in groups.values() for ref in refs]
    rows = entity_df.reset_index(drop=True).assign(**{ROW_ID: range(len(entity_df))})
    frame = store.get_historical_features(entity_df=rows, features=plain).to_df()
    if on_demand:
        extra = store.get_historical_features(entity_df=rows, features=on_demand).to_df()
        names = [ref.split(":", 1)[1] for ref in on_demand]
        frame = frame.merge(extra[[ROW_ID, *names]], on=ROW_ID, how="left")
    frame = frame.sort_values(ROW_ID).drop(columns=ROW_ID).reset_index(drop=True)
    for column in entity_df.columns:  # positional: both are in the rows' order
        if is_datetime64_any_dtype(entity_df[column]):
            frame[column] = entity_df[column].array
    return frame
