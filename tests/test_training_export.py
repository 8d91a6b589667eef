"""Models round-trip through the BentoML model store with their config and metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrec.settings import Settings
from models.ranking import RankingModel
from models.ranking_config import CONFIG_VERSION, RankingConfig
from models.store import (
    CONFIG_FILE,
    LoadedModel,
    config_from_stored,
    load_model,
    save_model,
    stored_model,
)


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


# A ranker's config.json as `save_model` wrote it before configs carried a version (main at
# 5293963): every field of its day. Training set use_history_category and min_match on and
# this one off, log_rates on; all three defaulted to off then.
SAVED_UNVERSIONED = json.loads(
    '{"tasks": ["click", "watch", "share", "comment", "cart", "favorite"], '
    '"n_item_buckets": 512, "n_user_buckets": 512, "embed_dim": 32, "text_dim": 384, '
    '"visual_dim": 1280, "n_categories": 12, "n_positions": 3, "n_sources": 2, '
    '"n_materials": 4, "context_dim": 8, "n_ctr_windows": 4, "attention_hidden": 32, '
    '"n_experts": 4, "expert_dims": [16], "tower_dims": [32], "dropout": 0.0, '
    '"use_multimodal": true, "content_modalities": ["text", "visual"], "use_dsn": false, '
    '"use_min": true, "use_cdr": true, "use_timeliness": true, "use_user_id": false, '
    '"use_history_category": false, "log_rates": true, "min_match": false, '
    '"id_dropout": 0.1, "user_id_dropout": 0.1, '
    '"pos_weight": {"share": 10.0, "comment": 10.0, "cart": 10.0, "favorite": 5.0}, '
    '"task_weights": {}, "adversarial_weight": 0.1, "seed": 0}'
)
# The fields whose default changed in config version 2 (off before, on now) or 3.
VERSION_1_OFF = ("use_history_category", "log_rates", "min_match", "use_popularity")


def _stored_ranker(settings: Settings) -> tuple[RankingModel, Path, str]:
    """A ranker saved with the config above; returns it, its config.json and its tag."""
    config = config_from_stored(RankingConfig, SAVED_UNVERSIONED)
    model = RankingModel(config)
    tag = save_model(settings, "ranking_test", model, config, {})
    return model, Path(stored_model(settings, tag).path_of(CONFIG_FILE)), tag


def test_a_config_saved_without_a_version_loads_as_it_was_saved(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    model, config_file, tag = _stored_ranker(settings)
    assert json.loads(config_file.read_text())["config_version"] == CONFIG_VERSION
    config_file.write_text(json.dumps(SAVED_UNVERSIONED))
    loaded, _ = load_model(settings, tag, RankingModel, RankingConfig)
    config = loaded.config
    assert (config.use_history_category, config.log_rates, config.min_match) == (
        False,
        True,
        False,
    )  # its own fields stand, whatever today's defaults
    assert config.expert_dims == (16,) and config.config_version == CONFIG_VERSION
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_field_an_unversioned_config_lacks_takes_version_1_s_default(tmp_path: Path) -> None:
    """Saved before the field existed, the model was trained without it: off, not today's on."""
    settings = Settings(workspace=tmp_path)
    _, config_file, tag = _stored_ranker(settings)
    older = {k: v for k, v in SAVED_UNVERSIONED.items() if k not in VERSION_1_OFF}
    config_file.write_text(json.dumps(older))
    loaded, _ = load_model(settings, tag, RankingModel, RankingConfig)
    assert not any(getattr(loaded.config, name) for name in VERSION_1_OFF)
    today = RankingConfig()
    assert all(getattr(today, name) for name in VERSION_1_OFF)


def test_a_version_2_config_without_popularity_taste_keeps_it_off() -> None:
    """Popularity taste was off until version 3 (issue #32): a version 2 config saved before
    the field existed was trained without it."""
    upgraded = RankingConfig.upgrade_stored({**SAVED_UNVERSIONED, "config_version": 2})
    assert not upgraded["use_popularity"] and upgraded["config_version"] == CONFIG_VERSION
    assert RankingConfig().use_popularity


def test_a_version_3_config_keeps_dsn_residuals_as_raw_blocks() -> None:
    """DSN's residuals entered the MMoE raw until version 4 (issue #32): a version 3 config
    loads as trained, saved with the field or (older still) without it."""
    for saved in ({}, {"dsn_in_min": False}):
        fields = {**SAVED_UNVERSIONED, **saved, "config_version": 3}
        assert not RankingConfig.upgrade_stored(fields)["dsn_in_min"]
    assert RankingConfig().dsn_in_min and RankingConfig().residual_in_min


def test_a_version_4_config_trained_its_item_ids_at_the_full_learning_rate() -> None:
    """The item-ID table learned at the ranker's learning rate until version 5 (issue #32)."""
    upgraded = RankingConfig.upgrade_stored({**SAVED_UNVERSIONED, "config_version": 4})
    assert not upgraded["slow_item_ids"] and RankingConfig().slow_item_ids


def test_a_ranker_config_of_a_newer_version_is_refused() -> None:
    with pytest.raises(ValueError, match="upgrade mmrec"):
        RankingConfig.upgrade_stored({**SAVED_UNVERSIONED, "config_version": 99})


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
