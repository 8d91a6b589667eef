"""The Spark offline-store profile (feature_store.spark.yaml, Spark in local mode) gives what
the DuckDB profile gives: the `ranking` and `recall` training sets row for row and value for
value (list features and on-demand views included), and the same online values after
materialize. Skips with one line where Java or pyspark is missing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.feast_store import apply_repo, materialize, open_store
from mmrec.settings import Settings
from mmrec.vocab import RANKING_SERVICE, RECALL_SERVICE
from mmrec.world_manifest import world_end
from tests.analysis_fixtures import copy_world
from training_sets.build import BuildConfig, build_ranking_set, build_recall_set, read_split

if shutil.which("java") is None:
    pytest.skip("needs Java: apt-get install openjdk-17-jre-headless", allow_module_level=True)
pytest.importorskip("pyspark", reason="needs pyspark: `make venv` installs mmrec[spark]")

pytestmark = pytest.mark.slow  # ~3 min beside the tiny world: two profiles' sets, Spark's JVM
SPLITS = ("train", "valid", "test")


def _plain(value):
    """A cell as plain Python: None for every kind of null, lists for arrays, floats for
    numbers, so two engines' frames compare by value, not by their pandas dtypes."""
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC") if value.tzinfo else value.tz_localize("UTC")
    if isinstance(value, str | bool | np.bool_):
        return value
    number = float(value)
    return None if math.isnan(number) else number


def _same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _differences(duck: pd.DataFrame, spark: pd.DataFrame, limit: int = 5) -> list[str]:
    """Cells where the two frames differ (at most `limit` per column), as readable lines."""
    problems = []
    if list(duck.columns) != list(spark.columns):
        return [f"columns differ: {sorted(set(duck.columns) ^ set(spark.columns))}"]
    if len(duck) != len(spark):
        return [f"rows differ: duckdb {len(duck)}, spark {len(spark)}"]
    for column in duck.columns:
        if duck[column].dtype != spark[column].dtype:
            problems.append(f"{column}: duckdb {duck[column].dtype}, spark {spark[column].dtype}")
        bad = [
            f"{column}[{row}]: duckdb {a!r} spark {b!r}"
            for row, (a, b) in enumerate(
                zip(map(_plain, duck[column]), map(_plain, spark[column]), strict=True)
            )
            if not _same(a, b)
        ]
        problems += bad[:limit]
    return problems


@pytest.fixture(scope="module")
def worlds(tiny_world: Settings, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny world applied under both offline profiles; its online store emptied
    and materialized again from Spark (the original keeps DuckDB's)."""
    duck = copy_world(tiny_world, tmp_path_factory.mktemp("spark") / "ws")
    spark = duck.replace(offline_store="spark")
    (duck.data_dir / "feast" / "online_store.db").unlink()
    apply_repo(spark)  # a fresh registry (registry.spark.db) and empty online tables
    return duck, spark


def test_the_spark_profile_registers_spark_sources_over_the_same_files(worlds) -> None:
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    duck, spark = worlds
    sources = {
        settings.offline_store: {
            view.name: view.batch_source for view in open_store(settings).list_feature_views()
        }
        for settings in (duck, spark)
    }
    assert (spark.data_dir / "feast" / "registry.spark.db").exists()
    assert open_store(spark).config.offline_store.type == "spark"
    assert sources["duckdb"].keys() == sources["spark"].keys()
    for name, source in sources["spark"].items():
        assert isinstance(source, SparkSource), name
        assert Path(source.path).relative_to(spark.data_dir / "offline")
        assert Path(source.path).parts[-3:] == Path(sources["duckdb"][name].path).parts[-3:]


@pytest.mark.parametrize(
    ("service", "build"), [(RANKING_SERVICE, build_ranking_set), (RECALL_SERVICE, build_recall_set)]
)
def test_training_sets_through_spark_equal_duckdb(worlds, service: str, build) -> None:
    config = BuildConfig()
    built = {}
    for settings in worlds:
        build(settings, config)
        built[settings.offline_store] = {
            split: read_split(settings, service, split) for split in SPLITS
        }
    for split in SPLITS:
        duck, spark = built["duckdb"][split], built["spark"][split]
        assert len(duck) > 0
        problems = _differences(duck, spark)
        assert not problems, f"{service} {split}:\n" + "\n".join(problems)


def test_materialize_from_spark_gives_duckdbs_online_values(feature_store, worlds) -> None:
    _, spark = worlds
    spark_store = open_store(spark)
    materialize(spark_store, world_end(spark))
    now = int(world_end(spark).timestamp())
    pairs = list(zip(range(1, 331), range(1, 600, 2), strict=False))  # unknown ids included
    rows = {
        RANKING_SERVICE: [{"user_id": u, "item_id": i, "request_ts": now} for u, i in pairs],
        RECALL_SERVICE: [{"user_id": u, "item_id": i, "sku_id": i % 90 + 1} for u, i in pairs],
    }
    for service, entity_rows in rows.items():
        online = {
            name: pd.DataFrame(
                store.get_online_features(
                    features=store.get_feature_service(service), entity_rows=entity_rows
                ).to_dict()
            )
            for name, store in (("duckdb", feature_store), ("spark", spark_store))
        }
        features = online["duckdb"].drop(columns=list(entity_rows[0]), errors="ignore")
        assert features.notna().sum().sum() > len(features)  # DuckDB's store is not empty
        problems = _differences(online["duckdb"], online["spark"])
        assert not problems, f"{service} online:\n" + "\n".join(problems)
