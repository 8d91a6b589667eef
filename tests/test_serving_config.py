"""Serving configuration from the environment (through Settings): defaults, overrides, and
clear errors."""

from __future__ import annotations

import pytest

from mmrec.settings import Settings, SettingsError
from serving.config import DEFAULT_CHANNEL_QUOTAS, ServingConfig


def test_defaults() -> None:
    config = ServingConfig.from_settings(Settings.from_env())
    assert config.candidates == 500 and config.clock == "world"
    assert config.quotas == DEFAULT_CHANNEL_QUOTAS and config.snapshot_refresh_s == 600.0


def test_numbers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMREC_CANDIDATES", "300")
    monkeypatch.setenv("MMREC_SNAPSHOT_REFRESH_S", "45.5")
    config = ServingConfig.from_settings(Settings.from_env())
    assert config.candidates == 300 and config.snapshot_refresh_s == 45.5


def test_quotas_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMREC_CHANNEL_QUOTAS", '{"u2v": 300}')
    monkeypatch.setenv("MMREC_MIX_QUOTAS", '{"home": {"video": 0.9, "live": 0.1}}')
    config = ServingConfig.from_settings(Settings.from_env())
    assert config.quotas["u2v"] == 300 and config.quotas["v2v"] == DEFAULT_CHANNEL_QUOTAS["v2v"]
    assert config.mix.quotas["home"] == {"video": 0.9, "live": 0.1}
    assert config.mix.quotas["detail"]["shop"] == 0.5  # other scenes keep their defaults


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("MMREC_CHANNEL_QUOTAS", "{not json", "JSON"),
        ("MMREC_CHANNEL_QUOTAS", '{"radio": 5}', "channel quotas"),
        ("MMREC_CHANNEL_QUOTAS", '{"u2v": -1}', "channel quotas"),
        ("MMREC_MIX_QUOTAS", '{"kitchen": {"video": 0.5}}', "MMREC_MIX_QUOTAS"),
        ("MMREC_MIX_QUOTAS", '{"home": {"video": 1.5}}', "MMREC_MIX_QUOTAS"),
        ("MMREC_MIX_QUOTAS", "[1, 2]", "JSON object"),
        ("MMREC_SERVING_CLOCK", "sundial", "MMREC_SERVING_CLOCK"),
        ("MMREC_CANDIDATES", "many", "MMREC_CANDIDATES"),
        ("MMREC_CANDIDATES", "0", "MMREC_CANDIDATES"),
        ("MMREC_SNAPSHOT_REFRESH_S", "soon", "MMREC_SNAPSHOT_REFRESH_S"),
        ("MMREC_SNAPSHOT_REFRESH_S", "-5", "MMREC_SNAPSHOT_REFRESH_S"),
    ],
)
def test_bad_settings_say_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=needle):
        ServingConfig.from_settings(Settings.from_env())
