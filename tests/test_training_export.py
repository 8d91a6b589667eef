"""Models round-trip through the BentoML model store with their config and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmrec.settings import Settings
from models.ranking import RankingConfig, RankingModel
from models.store import LoadedModel, load_model, save_model


def test_saved_model_loads_with_identical_weights_and_metadata(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    torch.manual_seed(0)
    config = RankingConfig(use_dsn=False)
    model = RankingModel(config)
    tag = save_model(
        settings,
        "ranking_test",
        model,
        config,
        {"feature_service": "ranking_v1", "auc": {"click": 0.7}},
    )
    loaded, metadata = load_model(settings, tag, RankingModel, RankingConfig)
    assert (tmp_path / "data" / "bentoml" / "models" / "ranking_test").is_dir()
    assert metadata == {"feature_service": "ranking_v1", "auc": {"click": 0.7}}
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not loaded.training


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_model(
            Settings(workspace=tmp_path),
            "ranking_test",
            RankingModel(RankingConfig()),
            RankingConfig(),
            {"bad": object()},
        )


@pytest.mark.parametrize(
    ("known", "expected"),
    [
        ([2, 5, 9], [False, True, True, False, True, False]),
        ([], [False] * 6),
        (None, [False] * 6),
    ],
)
def test_knows_is_membership_in_the_sorted_known_ids(known, expected) -> None:
    ids = np.array(known, dtype=np.int64) if known is not None else None
    loaded = LoadedModel("recall:x", torch.nn.Identity(), {}, ids)
    asked = np.array([1, 2, 5, 7, 9, 10])
    assert loaded.knows(asked).tolist() == expected
    if known:
        assert loaded.knows(asked).tolist() == np.isin(asked, ids).tolist()
