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
        ("MMREC_MAX_BODY_BYTES", "0", "MMREC_MAX_BODY_BYTES"),
        ("MMREC_BODY_TIMEOUT_S", "-1", "MMREC_BODY_TIMEOUT_S"),
        ("MMREC_API_TOKEN_READS", "maybe", "MMREC_API_TOKEN_READS"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle) as caught:
        Settings.from_env(environ={name: value})
    assert isinstance(caught.value, UserError)


SECRETS = ("MMREC_API_TOKEN", "MMREC_MILVUS_TOKEN", "MMREC_REDIS_URL")


@pytest.mark.parametrize("name", SECRETS)
def test_secrets_come_from_the_variable_or_its_file_and_stay_out_of_repr(
    tmp_path: Path, name: str
) -> None:
    planted = "planted-s3cret-value"
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{planted}\n")
    from_file = Settings.from_env(environ={f"{name}_FILE": str(secret_file)})
    from_variable = Settings.from_env(environ={name: planted})
    field = {"MMREC_API_TOKEN": "api_token", "MMREC_MILVUS_TOKEN": "milvus_token"}.get(
        name, "redis_url"
    )
    assert getattr(from_file, field) == getattr(from_variable, field) == planted
    assert planted not in repr(from_file) and planted not in repr(from_variable)


def test_a_secret_file_that_cannot_be_read_names_the_file_not_a_value(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match=r"MMREC_API_TOKEN_FILE names .*nope"):
        Settings.from_env(environ={"MMREC_API_TOKEN_FILE": str(missing)})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(environ={"MMREC_API_TOKEN": "a", "MMREC_API_TOKEN_FILE": str(missing)})


def test_a_failing_setting_never_shows_a_secret(tmp_path: Path) -> None:
    planted = "planted-s3cret-value"
    environ = {"MMREC_API_TOKEN": planted, "MMREC_REDIS_URL": planted, "MMREC_TORCH_THREADS": "x"}
    with pytest.raises(SettingsError, match="MMREC_TORCH_THREADS must be an integer") as caught:
        Settings.from_env(tmp_path, environ=environ)
    assert planted not in str(caught.value)
    settings = Settings.from_env(tmp_path, environ={**environ, "MMREC_TORCH_THREADS": "3"})
    assert planted not in repr(settings) and planted not in str(settings)
    assert settings.api_token == settings.redis_url == planted


def test_an_empty_variable_is_an_unset_one(tmp_path: Path) -> None:
    empty = {name: "" for name in ("MMREC_TORCH_THREADS", "MMREC_CHANNEL_QUOTAS", "BENTOML_HOME")}
    settings = Settings.from_env(tmp_path, environ=empty)
    assert (settings.torch_threads, settings.channel_quotas, settings.bentoml_home) == (2, {}, None)


def test_only_from_env_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMREC_ONLINE_STORE", "redis")
    monkeypatch.setenv("MMREC_TORCH_THREADS", "7")
    assert (Settings(workspace=tmp_path).online_store, Settings().torch_threads) == ("sqlite", 2)
    assert Settings.from_env(tmp_path).online_store == "redis"


def test_replace_checks_the_new_values_as_construction_does(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    assert settings.replace(online_store="redis").online_store == "redis"
    assert settings.online_store == "sqlite"  # frozen: replace makes a new one
    with pytest.raises(SettingsError, match="MMREC_SERVING_WORKERS must be >= 1, got 0"):
        settings.replace(serving_workers=0)
    with pytest.raises(SettingsError, match="mongo"):
        settings.replace(online_store="mongo")


@pytest.mark.parametrize(
    ("value", "flag"),
    [("1", True), ("true", True), ("yes", True), ("0", False), ("no", False), ("", False)],
)
def test_flags_read_yes_and_no(value: str, flag: bool) -> None:
    assert Settings.from_env(environ={"MMREC_API_TOKEN_READS": value}).api_token_reads is flag


def test_every_field_has_a_variable_and_a_description() -> None:
    from mmrec.settings import FROM_ENVIRONMENT, env_var

    names = [env_var(name) for name in FROM_ENVIRONMENT]
    assert len(set(names)) == len(names) and "BENTOML_HOME" in names
    assert all(Settings.model_fields[name].description for name in FROM_ENVIRONMENT)
