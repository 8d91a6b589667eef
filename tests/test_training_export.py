"""Models round-trip through the BentoML model store with their config and metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.export import load_model, save_model
from training.models.ranking import RankingConfig, RankingModel


def test_saved_model_loads_with_identical_weights_and_metadata(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    torch.manual_seed(0)
    config = RankingConfig(use_dsn=False)
    model = RankingModel(config)
    tag = save_model(
        "ranking_test", model, config, {"feature_service": "ranking", "auc": {"click": 0.7}}
    )
    loaded, metadata = load_model(tag, RankingModel, RankingConfig)
    assert metadata == {"feature_service": "ranking", "auc": {"click": 0.7}}
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not loaded.training


def test_metadata_must_be_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    with pytest.raises(TypeError):
        save_model(
            "ranking_test", RankingModel(RankingConfig()), RankingConfig(), {"bad": object()}
        )
