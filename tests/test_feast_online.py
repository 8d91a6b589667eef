"""Online store after materialize: equal to the offline point-in-time values at the world's
end, on SQLite and on a real Redis server; unknown entities read as nulls; bad config fails
with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from mmrec.feast_store import FeatureStoreError, apply_repo, materialize, open_store
from mmrec.settings import Settings, SettingsError
from mmrec.world_manifest import world_end
from tests.analysis_fixtures import copy_world
from tests.conftest import make_workspace, redis_server

COMPARED = {
    "user_id": [
        "user_behavior_seq:item_click_seq",
        "user_behavior_seq:sku_click_seq",
        "user_cross_domain:cdr_category_affinity",
    ],
    "item_id": [
        "item_attributes:sku_ids",
        "item_attributes:material",
        "item_stats:ctr_7d",
        "item_stats:impressions_7d",
    ],
}


def _normalize(value):
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    if isinstance(value, (list, np.ndarray)):
        return [round(float(v), 5) for v in value]
    return value if isinstance(value, str) else round(float(value), 5)


def _assert_online_equals_offline(settings: Settings, views: list[str] | None = None) -> None:
    """Online values equal offline point-in-time ones at the world's end (COMPARED, or only
    its refs of `views`)."""
    store = open_store(settings)
    end = world_end(settings)
    for key, all_refs in COMPARED.items():
        refs = [ref for ref in all_refs if views is None or ref.split(":")[0] in views]
        if not refs:
            continue
        ids = list(range(1, 301, 7))
        rows = pd.DataFrame({key: ids, "event_timestamp": pd.Timestamp(end)})
        offline = (
            store.get_historical_features(entity_df=rows, features=refs).to_df().set_index(key)
        )
        online = store.get_online_features(
            features=refs, entity_rows=[{key: i} for i in ids]
        ).to_dict()
        found = 0
        for ref in refs:
            column = ref.split(":")[1]
            for entity, value in zip(online[key], online[column], strict=True):
                want = _normalize(offline.at[entity, column])
                assert _normalize(value) == want, (
                    f"{ref} for {key}={entity}: online {value!r} offline {want!r}"
                )
                found += want is not None
        assert found > 0


def test_sqlite_online_values_equal_offline_point_in_time(tiny_world: Settings) -> None:
    _assert_online_equals_offline(tiny_world)


@pytest.mark.redis
def test_redis_online_values_equal_offline_point_in_time(redis_world: Settings) -> None:
    _assert_online_equals_offline(redis_world)


def test_unknown_entities_read_as_nulls_not_errors(feature_store) -> None:
    online = feature_store.get_online_features(
        features=feature_store.get_feature_service("ranking_v1"),
        entity_rows=[{"user_id": 10**9, "item_id": 10**9, "request_ts": 0}],
    ).to_dict()
    assert online["item_click_seq"] == [None]
    assert online["ctr_7d"] == [None]
    assert online["cdr_item_category_affinity"] == [0.0]


def test_features_show_names_an_unknown_service_and_the_known_ones(tiny_world: Settings) -> None:
    """Feast's FeatureServiceNotFoundException is the user's typo (exit 2, the known names);
    nothing else Feast raises is relabelled as one."""
    args = ["features", "show", "--user-id", "3", "--item-id", "5", "--service", "rankng_v1"]
    result = CliRunner().invoke(app, [*args, "-w", str(tiny_world.workspace)])
    assert result.exit_code == 2, result.output
    assert "unknown feature service 'rankng_v1'" in result.output
    assert "ranking_v1" in result.output.replace("'rankng_v1'", "")
    shown = CliRunner().invoke(app, [*args[:-1], "ranking_v1", "-w", str(tiny_world.workspace)])
    assert shown.exit_code == 0, shown.output


def test_malformed_feature_store_yaml_gives_a_clear_error(
    tiny_world: Settings, tmp_path: Path
) -> None:
    settings = make_workspace(tmp_path)
    shutil.copytree(tiny_world.data_dir / "raw", settings.raw_dir)
    (settings.feature_repo / "feature_store.yaml").write_text(
        "project: mmrec\nonline_store:\n  type: nosuchstore\n"
    )
    with pytest.raises(FeatureStoreError, match="feast apply failed"):
        apply_repo(settings)


def test_unsupported_online_store_setting_is_rejected() -> None:
    with pytest.raises(SettingsError, match="sqlite, redis"):
        Settings(online_store="cassandra")


# A password with characters YAML and Feast's connection-string parser could trip on.
REDIS_PASSWORD = "s3cret:pa#ss"
KEY_TTL_S = 3600


@pytest.mark.redis
def test_redis_with_a_password_and_a_key_ttl(tiny_world: Settings, tmp_path: Path) -> None:
    """MMREC_REDIS_URL carries the password as Feast's connection string does
    ("host:port,password=..."), `key_ttl_seconds` in the profile's yaml makes every entity key
    expire, the values equal SQLite's, and without the password the store refuses."""
    import redis

    copy = copy_world(tiny_world, tmp_path / "ws")
    yaml_file = copy.feature_repo / "feature_store.redis.yaml"
    online = "  connection_string: ${MMREC_REDIS_URL}\n"
    yaml_file.write_text(
        yaml_file.read_text().replace(online, f"{online}  key_ttl_seconds: {KEY_TTL_S}\n")
    )
    server = redis_server(tmp_path / "redis", options=("--requirepass", REDIS_PASSWORD))
    url = server.url
    try:
        settings = copy.replace(online_store="redis", redis_url=f"{url},password={REDIS_PASSWORD}")
        apply_repo(settings)
        store = open_store(settings)
        materialize(store, world_end(settings), ["item_stats", "user_behavior_seq"])
        _assert_online_equals_offline(settings, ["item_stats", "user_behavior_seq"])

        host, port = url.split(":")
        client = redis.Redis(host=host, port=int(port), password=REDIS_PASSWORD)
        keys = list(client.scan_iter(count=1000))
        ttls = [client.ttl(key) for key in keys]
        assert keys and all(0 < ttl <= KEY_TTL_S for ttl in ttls), sorted(set(ttls))[:5]

        no_password = open_store(settings.replace(redis_url=url))
        with pytest.raises(redis.exceptions.AuthenticationError):
            no_password.get_online_features(
                features=["item_stats:ctr_7d"], entity_rows=[{"item_id": 1}]
            )
    finally:
        server.stop()
