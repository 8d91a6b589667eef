"""Settings: the one reader of the environment, and what it hands to child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrec.errors import UserError
from mmrec.settings import Settings, SettingsError


def test_defaults_keep_everything_in_the_workspace(tmp_path: Path) -> None:
    settings = Settings.from_env(tmp_path, environ={})
    assert settings.model_store_dir == tmp_path.resolve() / "data" / "bentoml"
    assert settings.index_uri == str(tmp_path.resolve() / "data" / "index" / "milvus.db")
    assert (settings.online_store, settings.torch_threads) == ("sqlite", 2)
    assert (settings.recall_model, settings.rank_model) == ("recall:latest", "ranking:latest")


def test_variables_override_and_round_trip_to_a_child(tmp_path: Path) -> None:
    environ = {
        "MMREC_WORKSPACE": str(tmp_path),
        "MMREC_ONLINE_STORE": "redis",
        "MMREC_OFFLINE_STORE": "spark",
        "MMREC_REDIS_URL": "127.0.0.1:6390",
        "MMREC_TORCH_THREADS": "3",
        "BENTOML_HOME": str(tmp_path / "store"),
        "MMREC_MILVUS_URI": "http://127.0.0.1:19530",
        "MMREC_CHANNEL_QUOTAS": '{"u2v": 10}',
    }
    settings = Settings.from_env(environ=environ)
    assert settings.workspace == tmp_path.resolve()
    assert settings.model_store_dir == (tmp_path / "store").resolve()
    assert settings.index_uri == "http://127.0.0.1:19530"
    assert settings.channel_quotas == {"u2v": 10}
    child = Settings.from_env(environ=settings.environment())
    for name in (
        "workspace",
        "online_store",
        "offline_store",
        "redis_url",
        "torch_threads",
        "index_uri",
    ):
        assert getattr(child, name) == getattr(settings, name), name
    assert child.model_store_dir == settings.model_store_dir


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("MMREC_ONLINE_STORE", "cassandra", "MMREC_ONLINE_STORE"),
        ("MMREC_OFFLINE_STORE", "bigquery", "MMREC_OFFLINE_STORE"),
        ("MMREC_SPARK_DRIVER_MEMORY", "4 GB", "MMREC_SPARK_DRIVER_MEMORY"),
        ("MMREC_TORCH_THREADS", "two", "MMREC_TORCH_THREADS"),
        ("MMREC_SERVING_WORKERS", "0", "MMREC_SERVING_WORKERS"),
        ("MMREC_MIX_QUOTAS", "[1]", "MMREC_MIX_QUOTAS"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle) as caught:
        Settings.from_env(environ={name: value})
    assert isinstance(caught.value, UserError)
