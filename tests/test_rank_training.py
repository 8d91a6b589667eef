"""Ranking data path and training loop on the tiny world: tensors from the Feast-built ranking
set, loss falls and runs repeat under a seed, the exported model scores identically, metrics
are computed as documented, bad input exits 2."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.world_manifest import data_profile
from models.ranking import RankingModel, score_candidates
from models.ranking_config import RankingConfig
from models.ranking_inputs import require_content
from models.store import load_model, save_model
from tests.conftest import data_workspace
from training import cli as training_cli
from training.rank_ablation import (
    VARIANT_NAMES,
    VARIANTS,
    plot_ablation,
    run_ablation,
    variant_switches,
)
from training.rank_eval import PREFERENCES, gauc, oracle_scores, oracle_summary, truth_groups
from training.rank_gbdt import TABULAR_COLUMNS
from training.rank_train import (
    SWITCHES,
    RankingSplits,
    TrainConfig,
    evaluate_splits,
    export_metadata,
    fit,
    load_splits,
    model_config,
    valid_click_auc,
)
from training_sets.build import BuildConfig, build_ranking_set, read_split

MAX_SEQ_LEN = 20
FIT_ROWS = 1200  # a slice of the tiny train split: enough for the loss to fall, seconds to fit


@pytest.fixture(scope="module")
def splits(tiny_world: Settings, feature_store) -> RankingSplits:
    build_ranking_set(tiny_world, BuildConfig(), feature_store)
    return load_splits(tiny_world, MAX_SEQ_LEN, feature_store, keep_columns=TABULAR_COLUMNS)


@pytest.fixture(scope="module")
def small_splits(splits: RankingSplits) -> RankingSplits:
    return RankingSplits(
        splits.train.subset(slice(0, FIT_ROWS)),
        splits.valid,
        splits.test,
        splits.content,
        splits.profile,
    )


def test_tensors_follow_the_feast_rows_and_content_is_point_in_time(
    tiny_world: Settings, splits: RankingSplits
) -> None:
    frame = read_split(tiny_world, "ranking_v1", "train")
    frame = frame[frame.material.notna()].reset_index(drop=True)
    data = splits.train
    assert len(data) == len(frame)
    assert data.stats["rows_dropped_item_unpublished"] >= 0
    for i in np.flatnonzero(frame.item_click_seq.notna().to_numpy())[:50]:
        seq = list(frame.item_click_seq[i][:MAX_SEQ_LEN])
        assert data.seq_item_ids[i, : len(seq)].tolist() == seq
        assert int(data.seq_mask[i].sum()) == len(seq)
    assert torch.equal(
        data.label_masks["watch"], torch.from_numpy(frame.label_watch.notna().to_numpy())
    )
    assert torch.equal(
        data.labels["click"], torch.from_numpy(frame.label_click.to_numpy(np.float32))
    )
    # The one-row-per-item content lookup equals what the point-in-time join gave each row.
    content = splits.content
    assert content is not None, "the ranking service must carry item_embeddings"
    has = frame.text_emb.notna().to_numpy()
    assert has.sum() > 0.8 * len(frame)
    rows = data.item_rows.numpy()
    np.testing.assert_array_equal((rows > 0), has)
    np.testing.assert_allclose(
        content.text[rows[has]].numpy(), np.stack(frame.text_emb[has].to_numpy()), rtol=0, atol=0
    )
    np.testing.assert_allclose(
        content.visual[rows[has]].numpy(), np.stack(frame.visual_emb[has].to_numpy()), atol=0
    )
    assert set(content.versions) == {"encoder_name", "encoder_version", "fusion_version"}
    batch = data.batch(torch.arange(8), content)
    assert batch.user.seq_text_emb.shape == (8, MAX_SEQ_LEN, 384)
    assert batch.items.visual_emb.shape == (8, 1280)


def test_multimodal_configs_are_refused_without_content() -> None:
    with pytest.raises(ValueError, match="mmrec content encode"):
        require_content(RankingConfig(), None)
    require_content(
        RankingConfig(use_multimodal=False, use_dsn=False, use_min=False), None
    )  # ID-only trains without content


def test_sparse_tasks_get_rate_ratio_pos_weights_and_their_loss_weight(
    splits: RankingSplits,
) -> None:
    config = model_config(splits, TrainConfig(max_pos_weight=50.0, sparse_task_weight=0.3))
    assert config.task_weights == dict.fromkeys(("share", "comment", "cart", "favorite"), 0.3)
    rates = {
        t: float(splits.train.labels[t][splits.train.label_masks[t]].mean())
        for t in ("click", "share", "cart")
    }
    assert set(config.pos_weight) == {"share", "comment", "cart", "favorite"}
    for task in ("share", "cart"):
        want = min(50.0, max(1.0, rates["click"] / rates[task])) if rates[task] else 50.0
        assert config.pos_weight[task] == pytest.approx(want)


def test_loss_falls_and_the_same_seed_trains_the_same_model(small_splits: RankingSplits) -> None:
    train_config = TrainConfig(epochs=4, patience=4, batch_size=128, seed=3)
    config = model_config(small_splits, train_config)  # every block on
    first = fit(config, small_splits, train_config)
    losses = [h["loss_tasks"] for h in first.history]
    assert losses[-1] < 0.8 * losses[0], losses
    again = fit(config, small_splits, train_config)
    for (name, a), b in zip(
        first.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_exported_model_scores_500_candidates_like_the_trained_one(
    small_splits: RankingSplits, tmp_path: Path
) -> None:
    settings = Settings(workspace=tmp_path)
    train_config = TrainConfig(epochs=1, batch_size=256)
    config = model_config(small_splits, train_config)
    result = fit(config, small_splits, train_config)
    metrics = evaluate_splits(result.model, small_splits, ("test",))
    metadata = export_metadata(config, small_splits, train_config, result, metrics)
    tag = save_model(settings, "ranking_test", result.model, config, metadata)
    loaded, stored = load_model(settings, tag, RankingModel, RankingConfig)
    assert stored["feature_service"] == "ranking_v1"
    assert stored["encoder_version"] == small_splits.content.versions["encoder_version"]
    opt_in = ("use_user_id", "use_recall_vector", "standardize", "bin_scalars")
    assert stored["switches"] == {name: name not in opt_in for name in SWITCHES}

    test = small_splits.test
    user = test.batch(slice(0, 1), small_splits.content).user  # one user, B = 1
    candidates = test.batch(torch.arange(1, 501), small_splits.content).items
    before = score_candidates(result.model, user, candidates)
    after = score_candidates(loaded, user, candidates)
    for task in config.tasks:
        assert before[task].shape == (500,)
        assert torch.equal(before[task], after[task]), task


def test_early_stopping_keeps_the_best_valid_epoch(small_splits: RankingSplits) -> None:
    train_config = TrainConfig(epochs=4, patience=1, batch_size=256, lr=2e-2, seed=1)
    result = fit(model_config(small_splits, train_config), small_splits, train_config)
    aucs = [record["valid_click_auc"] for record in result.history]
    best = int(np.argmax(aucs))
    # it stops the first epoch that does not beat the best (patience 1), or after 4
    assert len(aucs) == 4 or (len(aucs) == best + 2 and aucs[-1] <= aucs[best])
    assert valid_click_auc(result.model, small_splits) == pytest.approx(aucs[best], abs=1e-9)
    lrs = [record["lr"] for record in result.history]
    assert all(b in (a, a / 2) for a, b in itertools.pairwise(lrs))  # halved on no rise


def test_history_categories_are_the_clicked_items_categories(
    tiny_world: Settings, splits: RankingSplits
) -> None:
    items = pd.read_parquet(tiny_world.raw_dir / "items.parquet", columns=["item_id", "category"])
    order = {c: i for i, c in enumerate(data_profile(tiny_world).categories)}
    index = dict(zip(items.item_id, items.category.map(order), strict=True))
    data = splits.train
    mask = data.seq_mask.numpy()
    want = np.vectorize(lambda item: index.get(int(item), -1))(data.seq_item_ids.numpy())
    got = data.seq_category.numpy()
    assert mask.any() and (got[~mask] == -1).all()
    np.testing.assert_array_equal(got[mask], want[mask])


def test_history_popularity_is_the_item_stats_join_at_each_rows_time(
    tiny_world: Settings, splits: RankingSplits, feature_store
) -> None:
    """Each history item's impressions_7d, looked up per (item, row day), is what Feast's
    point-in-time join at the row's own time returns for it."""
    frame = read_split(tiny_world, "ranking_v1", "train")
    frame = frame[frame.material.notna()].reset_index(drop=True)
    data = splits.train
    rows, positions = np.nonzero(data.seq_mask.numpy())
    pick = np.random.default_rng(0).choice(len(rows), size=min(300, len(rows)), replace=False)
    rows, positions = rows[pick], positions[pick]
    entity = pd.DataFrame(
        {
            "item_id": data.seq_item_ids.numpy()[rows, positions],
            "event_timestamp": frame.event_timestamp.iloc[rows].to_numpy(),
        }
    )
    joined = feature_store.get_historical_features(
        entity_df=entity, features=["item_stats:impressions_7d"]
    ).to_df()
    joined = entity.merge(joined, on=["item_id", "event_timestamp"], how="left")
    want = joined.impressions_7d.astype("float64").fillna(0.0).to_numpy()
    got = data.seq_popularity.numpy()[rows, positions]
    assert (want > 0).mean() > 0.5  # most history items were shown in the week before
    np.testing.assert_array_equal(got, want)
    assert not data.seq_popularity.numpy()[~data.seq_mask.numpy()].any()  # padding: 0
    candidate = data.popularity.numpy()
    np.testing.assert_array_equal(candidate[:, 1], frame.impressions_7d.fillna(0).to_numpy())


def test_users_unseen_in_training_are_served_with_a_zero_user_embedding(
    splits: RankingSplits,
) -> None:
    for split in (splits.valid, splits.test):
        trained = torch.isin(split.user_id, splits.train.user_id.unique())
        assert torch.equal(split.user_known, trained)
        batch_ids = split.batch(slice(None)).user.user_id
        assert torch.equal(batch_ids, torch.where(trained, split.user_id, -1))
    model = RankingModel(RankingConfig(use_user_id=True, user_id_dropout=0.5)).eval()
    emb = model.user_embedding(torch.tensor([-1, 7, 7]))
    assert torch.equal(emb[0], torch.zeros_like(emb[0])) and emb[1].abs().sum() > 0
    assert torch.equal(emb[1], emb[2])  # dropout is for training only
    model.train()
    torch.manual_seed(0)
    dropped = model.user_embedding(torch.full((1000,), 7)).abs().sum(1) == 0
    assert 400 < int(dropped.sum()) < 600


def test_the_oracle_scores_rows_by_the_worlds_hidden_click_utility(
    tiny_world: Settings, splits: RankingSplits, tmp_path: Path
) -> None:
    test = splits.test
    groups = truth_groups(tiny_world.truth_dir, test)
    assert set(groups) == {f"{p} {g}" for p in PREFERENCES for g in ("top third", "rest")}
    assert 0.2 < groups["pref_visual top third"].mean() < 0.5
    oracle = oracle_summary(tiny_world.truth_dir, tiny_world.raw_dir, test, groups)
    full = oracle["metrics"]["click_all_auc"]
    assert full > 0.75
    assert oracle["without_user_preference"][" + ".join(PREFERENCES)]["auc"] < full
    # the generator's own probabilities: their mean is the click rate (the product-page
    # link term, left out, only adds clicks)
    logits = oracle_scores(tiny_world.truth_dir, tiny_world.raw_dir, test)
    rate = float(test.labels["click"].mean())
    assert 0.8 * rate < float(torch.sigmoid(torch.from_numpy(logits)).mean()) <= 1.05 * rate
    assert oracle_summary(tmp_path, tmp_path, test, {}) is None  # imported data: no truth


def _ablation_workspace(tiny_world: Settings, folder: Path) -> Settings:
    """Settings whose artifacts go to `folder`, with the tiny world's truth and raw data."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name in ("truth", "raw"):
        (folder / "data" / name).symlink_to(getattr(tiny_world, f"{name}_dir"))
    return tiny_world.replace(workspace=folder)


def test_the_ablation_reports_groups_the_oracle_and_costs(
    tiny_world: Settings, small_splits: RankingSplits, tmp_path: Path
) -> None:
    settings = _ablation_workspace(tiny_world, tmp_path)
    train_config = TrainConfig(epochs=1, batch_size=256)
    variants = ("full", "full-min+popularity", "gbdt")
    summary = run_ablation(settings, train_config, (0,), variants, small_splits)
    assert summary["oracle"]["metrics"]["click_all_auc"] > 0.75
    assert set(summary["runs"][0]["groups"]) == set(summary["oracle"]["groups"])
    report = (settings.artifacts_dir / "ranking" / "report.md").read_text()
    for heading in ("click AUC by user group", "The ceiling", "Cost per run"):
        assert heading in report
    assert "| full-min+popularity |" in report and "| gbdt |" in report
    assert (settings.artifacts_dir / "ranking" / "ablation.png").exists()
    gbdt = next(r for r in summary["runs"] if r["variant"] == "gbdt")
    assert set(gbdt["metrics"]) == set(summary["runs"][0]["metrics"])  # every task scored
    # 1,200 training rows: above chance, far from the small world's figures
    assert gbdt["metrics"]["click_all_auc"] > 0.55 and gbdt["features"] > 40


def test_an_ablation_split_over_processes_merges_into_one_report(
    tiny_world: Settings, small_splits: RankingSplits, tmp_path: Path
) -> None:
    """Seeds run apart (`--first-seed`) merge with `--merge` into the report one process would
    write; runs of another training setup, or the same run twice, are refused with exit 2."""
    train_config = TrainConfig(epochs=1, batch_size=256)
    files = []
    for seed in (0, 1):
        settings = _ablation_workspace(tiny_world, tmp_path / f"seed{seed}")
        run_ablation(settings, train_config, (seed,), ("full-dsn",), small_splits)
        files.append(settings.artifacts_dir / "ranking" / "ablation.json")
    merged = data_workspace(tmp_path / "merged")  # merging trains nothing
    args = ["train", "rank-ablation", "-w", str(merged.workspace)]
    result = CliRunner().invoke(app, [*args, "--merge", str(files[0]), "--merge", str(files[1])])
    assert result.exit_code == 0, result.output
    summary = json.loads((merged.artifacts_dir / "ranking" / "ablation.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["runs"]) == 2
    aucs = [run["metrics"]["click_all_auc"] for run in summary["runs"]]
    stats = summary["summary"]["full-dsn"]["click_all_auc"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(float(np.mean(aucs)), abs=1e-3)
    assert "over seeds [0, 1]" in (merged.artifacts_dir / "ranking" / "report.md").read_text()

    original = json.loads(files[1].read_text())
    assert original["variants"]["full-dsn"] == variant_switches("full-dsn")  # every switch
    other_default = {**original["variants"]["full-dsn"], "dsn_in_min": False}
    no_elapsed = {k: v for k, v in original.items() if k != "elapsed_seconds"}
    no_seed = {**original, "runs": [{"variant": "full-dsn", "metrics": {}}]}
    broken = {
        "another train_config": {**original, "train_config": {**original["train_config"], "epochs": 2}},
        "has other switches": {**original, "variants": {"full-dsn": other_default}},
        "lacks ['elapsed_seconds']": no_elapsed,
        "lacks runs with variant, seed and metrics": no_seed,
    }  # fmt: skip
    for message, changed in [("ran twice", None), *broken.items()]:
        if changed is not None:
            files[1].write_text(json.dumps(changed))
        second = files[0] if changed is None else files[1]
        result = CliRunner().invoke(app, [*args, "--merge", str(files[0]), "--merge", str(second)])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_gauc_weights_users_by_impressions_and_skips_one_class_users() -> None:
    users = np.array([1, 1, 1, 2, 2, 3, 3])
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.95, 0.2, 0.8, 0.5, 0.4])
    # user 1: AUC 1/2 over 3 impressions; user 2: AUC 0 over 2; user 3 has no positive
    assert gauc(labels, scores, users) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)
    assert gauc(np.zeros(3), scores[:3], users[:3]) is None


def test_ablation_variants_add_one_block_at_a_time() -> None:
    on = [sum(VARIANTS[name].values()) for name in VARIANT_NAMES]
    assert on == list(range(len(VARIANT_NAMES)))
    for earlier, later in itertools.pairwise(VARIANT_NAMES):
        assert all(VARIANTS[later][s] for s, v in VARIANTS[earlier].items() if v)
        RankingConfig(**VARIANTS[later])  # every variant is a valid config
    defaults = RankingConfig()
    assert all(getattr(defaults, s) == v for s, v in VARIANTS["full"].items())  # what rank trains
    for block in ("dsn", "min", "history_category", "popularity"):  # leave one out
        assert VARIANTS[f"full-{block}"] == {**VARIANTS["full"], f"use_{block}": False}
    assert VARIANTS["full+user_id"] == {**VARIANTS["full"], "use_user_id": True}
    cli_default = inspect.signature(training_cli.rank_ablation).parameters["variants"].default
    assert cli_default.split(",") == list(VARIANT_NAMES)


def test_full_with_blocks_added_or_removed_names_its_switches() -> None:
    full = variant_switches("full")
    assert set(full) == set(SWITCHES)  # every switch, so ablation.json says what ran
    assert all(getattr(RankingConfig(), s) == v for s, v in full.items())
    assert variant_switches("full-dsn") == {**full, **VARIANTS["full-dsn"]}
    got = variant_switches("full-dsn-popularity+recall_vector")
    assert got == {**full, "use_dsn": False, "use_popularity": False,
                   "use_recall_vector": True}  # fmt: skip
    assert variant_switches("full+dsn_in_min")["dsn_in_min"]
    for bad in ("full+colour", "half-dsn", "+nothing"):
        with pytest.raises(UserError, match="variant"):
            variant_switches(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--no-multimodal"], "use_dsn needs use_multimodal"),
    ],
)
def test_rank_cli_bad_input_exits_2_with_a_message(
    tiny_world: Settings, splits: RankingSplits, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["train", "rank", *args, "--workspace", str(tiny_world.workspace)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_rank_cli_without_a_training_set_exits_2(tmp_path: Path) -> None:
    data_workspace(tmp_path)
    result = CliRunner().invoke(app, ["train", "rank", "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    assert "mmrec train build-sets" in result.output


def test_the_ablation_plot_draws_data_with_one_task(tmp_path: Path) -> None:
    """MovieLens has click only: one column of axes."""
    stats = {"mean": 0.7, "std": 0.01}
    metrics = {f"click_{s}_{m}": 0.7 for s in ("all", "warm", "cold") for m in ("auc", "gauc")}
    summary = {
        "runs": [{"variant": "full", "metrics": metrics}],
        "summary": {"full": {name: stats for name in metrics}},
    }
    path = plot_ablation(summary, tmp_path / "ablation.png")
    assert path.stat().st_size > 0


def test_train_rank_options_default_to_the_train_config() -> None:
    """`mmrec train rank` and `rank-ablation` default every TrainConfig option to TrainConfig's
    own default (the CLI module does not import the trainer, so it repeats them)."""
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for command in (training_cli.rank, training_cli.rank_ablation):
        options = inspect.signature(command).parameters
        shared = set(options) & set(fields)
        assert {"epochs", "patience", "lr", "sparse_task_weight"} <= shared
        for name in shared:
            assert options[name].default == fields[name], (command.__name__, name)
