"""Recall training and evaluation (training/recall_*.py): metrics, planted signal, tiny world."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES
from models.recall import TwoTowerRecall
from models.recall_inputs import (
    ROW_COLUMNS,
    UNKNOWN_ITEM_ID,
    channel_data,
    id_buckets,
    item_table_from_frame,
)
from training.recall_eval import (
    content_scorer,
    evaluate_scorer,
    model_scorer,
    popularity_scorer,
    ranking_metrics,
    seed_lines,
    seed_summary,
    target_ranks,
)
from training.recall_train import (
    RecallSplits,
    TrainConfig,
    fit,
    load_splits,
    model_config,
    positive_log_q,
    valid_recall,
)
from training_sets.build import BuildConfig, build_recall_set

SMALL_MODEL = {"id_dim": 8, "field_dim": 16, "hidden_dims": (32,), "out_dim": 16}


# ---------------------------------------------------------------------------------------------
# Metrics


def test_ties_rank_at_their_expected_position_and_disallowed_items_do_not_count() -> None:
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.9, 0.5, 0.7, 0.1]])
    allowed = torch.tensor([[True, True, True, True], [True, True, False, True]])
    ranks = target_ranks(scores, torch.tensor([1, 1]), allowed)
    assert ranks.tolist() == [1.5, 1.0]  # 3 tied others -> 1.5; 0.7 is not a candidate


@pytest.mark.parametrize(
    ("ranks", "recall20", "ndcg"),
    [
        ([0.0], 1.0, 1.0),
        ([19.0, 20.0], 0.5, (1 / np.log2(21) + 1 / np.log2(22)) / 2),
        ([60.0], 0.0, 0.0),
    ],
)
def test_recall_and_ndcg_from_ranks(ranks: list[float], recall20: float, ndcg: float) -> None:
    metrics = ranking_metrics(np.array(ranks))
    assert metrics["recall@20"] == pytest.approx(recall20)
    assert metrics["ndcg@50"] == pytest.approx(ndcg)
    assert ranking_metrics(np.empty(0))["recall@50"] is None


def test_id_buckets_leave_the_unknown_bucket_free() -> None:
    for max_id in (1, 1000, 6100, 90_000):
        n = id_buckets(max_id)
        assert n >= 2 * max_id and (n & (n - 1)) == 0
        assert UNKNOWN_ITEM_ID % n > max_id


# ---------------------------------------------------------------------------------------------
# Planted signal: clicks follow the user's category and the item's text; popularity is flat


N_ITEMS, N_USERS, N_CATS_USED = 120, 30, 6
T0 = 1_790_000_000


def planted_world(seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Items whose text embedding carries their category; users who click one category.

    Every item is clicked about equally often overall, so popularity carries no signal.
    """
    rng = np.random.default_rng(seed)
    categories = np.arange(N_ITEMS) % N_CATS_USED
    centers = rng.normal(size=(N_CATS_USED, 384)).astype(np.float32)
    text = centers[categories] + 0.3 * rng.normal(size=(N_ITEMS, 384)).astype(np.float32)
    probs = np.eye(len(CATEGORIES), dtype=np.float32)[categories]
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, N_ITEMS + 1),
            "material": "video",
            "category": [CATEGORIES[c] for c in categories],
            "category_index": categories,
            "publish_ts_s": T0 - 86_400,
            "text_emb": list(text),
            "visual_emb": list(rng.normal(size=(N_ITEMS, 1280)).astype(np.float32)),
            "fused_emb": list(text[:, :128]),
            "category_probs": list(probs),
            "quality_score": rng.random(N_ITEMS).astype(np.float32),
            "encoder_name": "planted",
            "encoder_version": "v1",
            "fusion_version": "f1",
            "tag_model_version": "t1",
        }
    )
    user_cat = np.arange(N_USERS) % N_CATS_USED
    splits = {}
    for split, n_clicks, offset in (("train", 30, 0), ("valid", 4, 1), ("test", 8, 2)):
        rows = []
        for user in range(N_USERS):
            pool = np.flatnonzero(categories == user_cat[user]) + 1
            clicks = rng.choice(pool, n_clicks)
            history = rng.choice(pool, 10)
            affinity = np.zeros(len(CATEGORIES), dtype=np.float32)
            for item in clicks:
                ts = pd.Timestamp(T0 + offset * 86_400 + int(rng.integers(86_400)), unit="s")
                for label, item_id in [(1, item), *((0, n) for n in rng.integers(1, N_ITEMS, 4))]:
                    rows.append(
                        ("u2v", user, int(item_id), None, 0, ts.tz_localize("UTC"), label,
                         history, affinity, None)
                    )  # fmt: skip
        splits[split] = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    return items, splits


@pytest.fixture(scope="module")
def planted() -> RecallSplits:
    items, frames = planted_world()
    table = item_table_from_frame(items)
    splits = {
        split: {"u2v": channel_data(frame, "u2v", table)[0]} for split, frame in frames.items()
    }
    known = splits["train"]["u2v"].item_id.unique().numpy()
    table.set_known(known)
    return RecallSplits(splits, table, ("2026-09-03",), {})


@pytest.fixture(scope="module")
def planted_fit(planted: RecallSplits):
    train_config = TrainConfig(epochs=4, patience=4, batch_size=128, lr=5e-3, seed=0)
    config = model_config(planted.table, train_config, **SMALL_MODEL)
    return fit(config, planted, train_config, "planted")


def test_the_kept_epoch_is_the_best_on_valid_recall(planted: RecallSplits, planted_fit) -> None:
    history, best = planted_fit.history[:-1], planted_fit.history[-1]["best_epoch"]
    recalls = [record["valid_recall@100"] for record in history]
    assert best == int(np.argmax(recalls)) + 1
    assert valid_recall(planted_fit.model, planted) == pytest.approx(recalls[best - 1])


def test_the_seed_summary_averages_each_cell_over_the_runs() -> None:
    def run(value: float) -> dict:
        cells = {"recall@50": value, "recall@100": 2 * value}
        return {"methods": {"m": {"all": {"all": cells, "cold": dict.fromkeys(cells)}}}}

    summary = seed_summary([run(0.1), run(0.3)], range(2))
    cell = summary["methods"]["m"]["all all recall@100"]
    assert cell["mean"] == pytest.approx(0.4) and cell["std"] == pytest.approx(0.2828, abs=1e-4)
    assert "all cold recall@50" not in summary["methods"]["m"]  # undefined in a run: left out
    assert "| m | 0.400 ± 0.283 |" in "\n".join(seed_lines(summary))


def test_logq_is_each_items_share_of_the_positives(planted: RecallSplits) -> None:
    data = planted["train"]["u2v"]
    log_q = positive_log_q(data, len(planted.table))
    counts = np.bincount(data.item_rows[data.labels > 0.5].numpy(), minlength=len(log_q)) + 1
    np.testing.assert_allclose(log_q.exp().numpy(), counts / counts.sum(), rtol=1e-5)
    assert model_config(planted.table, TrainConfig()).logq_correction
    assert not model_config(planted.table, TrainConfig(softmax_weight=0)).logq_correction


def test_training_lowers_the_loss(planted_fit) -> None:
    history = planted_fit.history[:-1]  # the last entry names the best epoch
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["valid_bce"] < history[0]["valid_bce"]


def test_model_beats_popularity_on_the_planted_signal(planted: RecallSplits, planted_fit) -> None:
    cold = np.zeros(len(planted.table), dtype=bool)
    test, table = planted["test"], planted.table
    model = evaluate_scorer(model_scorer(planted_fit.model, table), test, table, cold)
    popular = evaluate_scorer(popularity_scorer(planted["train"], table), test, table, cold)
    assert model["all"]["all"]["recall@20"] > popular["all"]["all"]["recall@20"] + 0.2
    assert model["all"]["all"]["ndcg@50"] > popular["all"]["all"]["ndcg@50"]


def test_training_is_deterministic_with_a_seed(planted: RecallSplits) -> None:
    train_config = TrainConfig(epochs=1, batch_size=128, seed=3)
    config = model_config(planted.table, train_config, **SMALL_MODEL)
    first, second = (fit(config, planted, train_config).model for _ in range(2))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_without_content_the_item_tower_reads_ids_and_attribute_tags(
    planted: RecallSplits,
) -> None:
    items, _ = planted_world()
    table = item_table_from_frame(items.drop(columns=["text_emb", "visual_emb", "category_probs"]))
    assert not table.content and table.versions["encoder_version"] == "none"
    config = model_config(table, TrainConfig(), **SMALL_MODEL)
    assert config.item_fields == ("id", "tags")
    categories = items.category.map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    assert (table.tags.argmax(1) == categories).all()
    vecs = TwoTowerRecall(config).encode_items(table.inputs(np.arange(5)))
    assert vecs.shape == (5, SMALL_MODEL["out_dim"])


def test_unknown_items_wear_the_unknown_id(planted: RecallSplits) -> None:
    table = planted.table
    ids = table.inputs(np.arange(len(table))).item_id.numpy()
    known = np.isin(table.item_id, planted["train"]["u2v"].item_id.numpy())
    assert (ids[known] == table.item_id[known]).all()
    assert (ids[~known] == UNKNOWN_ITEM_ID).all()


def test_content_baseline_follows_the_history_embedding(planted: RecallSplits) -> None:
    cold = np.zeros(len(planted.table), dtype=bool)
    test, table = planted["test"], planted.table
    content = evaluate_scorer(content_scorer(table), test, table, cold)
    popular = evaluate_scorer(popularity_scorer(planted["train"], table), test, table, cold)
    assert content["u2v"]["all"]["queries"] == int((test["u2v"].labels > 0.5).sum())
    assert content["all"]["all"]["recall@20"] > popular["all"]["all"]["recall@20"] + 0.2


# ---------------------------------------------------------------------------------------------
# The tiny world, through Feast and the CLI


@pytest.fixture(scope="module")
def recall_world(tiny_world: Settings, feature_store) -> Settings:
    build_recall_set(tiny_world, BuildConfig(), feature_store)
    return tiny_world


def test_tensors_follow_the_feast_rows(recall_world: Settings, feature_store) -> None:
    splits = load_splits(recall_world, 20, feature_store)
    table = splits.table
    assert table.content and table.versions["encoder_version"] != "none"
    for split in ("train", "test"):
        for channel, data in splits[split].items():
            assert len(data) > 0, (split, channel)
            assert (table.item_id[data.item_rows.numpy()] == data.item_id.numpy()).all()
            # every candidate was published by the time of its row (point in time)
            assert (table.publish_ts[data.item_rows.numpy()] <= data.event_ts.numpy()).all()
    v2v = splits["test"]["v2v"]
    assert (table.is_video[v2v.seed_rows.numpy()]).all()


def test_cli_trains_evaluates_and_exports(
    recall_world: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.store import stored_model

    monkeypatch.setenv("MMREC_TORCH_THREADS", "1")
    ws = str(recall_world.workspace)
    result = CliRunner().invoke(app, ["train", "recall", "--epochs", "1", "--workspace", ws])
    assert result.exit_code == 0, result.output
    out = recall_world.artifacts_dir / "recall"
    report = json.loads((out / "metrics.json").read_text())
    methods = report["evaluation"]["methods"]
    assert set(methods) == {"popularity", "content-only", "two-tower", "id-only"}
    for name in methods:
        assert set(methods[name]) == {"u2v", "v2v", "s2v", "all"}
    assert (out / "recall_at_k.png").stat().st_size > 0
    assert "| popularity | cold |" in (out / "report.md").read_text()
    stored = stored_model(recall_world, report["tag"])
    assert stored.info.metadata["feature_service"] == "recall_v1"
    assert stored.info.metadata["encoder_version"] != "none"
    assert "recall@50" in stored.info.metadata["metrics"]["test"]


@pytest.mark.parametrize(
    "args", [["--epochs", "0"], ["--id-dropout", "1.5"], ["--softmax-weight", "-1"]]
)
def test_cli_rejects_bad_options(args: list[str], tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "recall", *args, "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    assert "must be" in result.output


def test_cli_without_a_world_exits_2(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "recall", "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    assert "mmrec" in result.output
