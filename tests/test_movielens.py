"""MovieLens-100k recall benchmark (training/movielens.py): loader, mapping, split, rows, run.

The data is the recbole wheel's bundled ml-100k; training tests use a seeded subsample with
real MiniLM text embeddings so the file stays well under a minute.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ingest.movielens import MovieLens, item_texts, load_movielens, subsample
from mmrec.io import read_json
from mmrec.settings import Settings
from models.recall import TwoTowerRecall
from models.recall_inputs import UNKNOWN_ITEM_ID
from training.movielens import (
    ARTIFACT_DIR,
    MODEL_FIELDS,
    Benchmark,
    SplitConfig,
    build_benchmark,
    click_states,
    encode_texts,
    item_table,
    split_ratings,
    train_movielens,
    truth_ranks,
    user_metrics,
)
from training.recall_train import TrainConfig, fit, mean_bce, model_config

SMALL_MODEL = {"id_dim": 8, "field_dim": 16, "hidden_dims": (32,), "out_dim": 16}
MAX_SEQ_LEN = 10


@pytest.fixture(scope="module")
def ml() -> MovieLens:
    return load_movielens()


@pytest.fixture(scope="module")
def small(ml: MovieLens) -> Benchmark:
    """250 users x 200 movies, real text embeddings."""
    sub = subsample(ml, n_users=250, n_items=200, seed=0)
    threads = torch.get_num_threads()
    text, version = encode_texts(item_texts(sub.items), threads=1)
    torch.set_num_threads(threads)
    return build_benchmark(sub, item_table(sub, text, version), SplitConfig(), MAX_SEQ_LEN)


# ---------------------------------------------------------------------------------------------
# Loading and mapping


def test_loader_reads_the_bundled_ml_100k_files(ml: MovieLens) -> None:
    assert len(ml.ratings) == 100_000
    assert ml.ratings.user_id.nunique() == 943
    assert len(ml.items) == ml.items.item_id.nunique() == 1682
    assert set(ml.ratings.rating) == {1, 2, 3, 4, 5}
    assert len(ml.genres) == 19 and "unknown" in ml.genres
    assert item_texts(ml.items)[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."


def test_missing_files_say_where_the_data_comes_from(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recbole"):
        load_movielens(tmp_path)


def test_cli_rejects_bad_options_with_a_non_zero_exit() -> None:
    result = CliRunner().invoke(app, ["train", "recall-movielens", "--epochs", "0"])
    assert result.exit_code == 2 and "epochs" in result.output


def test_split_maps_ratings_and_keeps_the_test_period_out_of_training(ml: MovieLens) -> None:
    config = SplitConfig(seed=0)
    split = split_ratings(ml, config)
    r = split.ratings
    assert (r.click == (r.rating >= 4)).all()
    assert (r.timestamp[r.period == "train"] < split.valid_start).all()
    valid = r.timestamp[r.period == "valid"]
    assert ((valid >= split.valid_start) & (valid < split.test_start)).all()
    assert (r.timestamp[r.period == "test"] >= split.test_start).all()
    assert split.stats["ratings_test"] == pytest.approx(10_000, rel=0.01)
    pre_test = set(r.item_id[r.period != "test"])
    assert len(split.holdout) == 168 and not pre_test & set(split.holdout)
    assert not pre_test & set(split.cold) and set(split.holdout) <= set(split.cold)
    assert (r.period == "test").sum() == (ml.ratings.timestamp >= split.test_start).sum()
    other = split_ratings(ml, replace(config, seed=1))
    assert np.array_equal(split.holdout, split_ratings(ml, config).holdout)
    assert not np.array_equal(split.holdout, other.holdout)


def test_click_states_are_the_earlier_clicks_newest_first() -> None:
    genres = np.eye(3, dtype=np.float32)
    clicks = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "row": [0, 1, 1, 2, -1]})
    history, affinity = click_states(clicks, genres, max_len=2)
    assert history.tolist() == [[-1, -1], [0, -1], [1, 0], [-1, -1], [2, -1]]
    assert affinity.tolist() == [[0, 0, 0], [1, 0, 0], [0.5, 0.5, 0], [0, 0, 0], [0, 0, 1]]


# ---------------------------------------------------------------------------------------------
# Training rows and evaluation sets


def test_negatives_never_equal_the_positive_or_the_seed(small: Benchmark) -> None:
    for period in ("train", "valid"):
        for channel, data in small.splits[period].items():
            blocks = data.item_rows.reshape(-1, 5).numpy()
            assert (data.labels.reshape(-1, 5)[:, 0] == 1).all()
            assert (data.labels.reshape(-1, 5)[:, 1:] == 0).all()
            assert (blocks[:, 1:] != blocks[:, :1]).all(), (period, channel)
            if channel == "v2v":
                seeds = data.seed_rows.reshape(-1, 5).numpy()
                assert (blocks != seeds).all()


def test_rows_respect_the_split_and_cold_items_have_no_train_interaction(
    small: Benchmark,
) -> None:
    table, splits = small.splits.table, small.splits
    train_ts = splits["train"]["u2v"].event_ts.max()
    valid_ts = splits["valid"]["u2v"].event_ts
    assert train_ts < valid_ts.min() and valid_ts.max() < splits["test"]["u2v"].event_ts.min()
    cold_rows = set(np.flatnonzero(small.cold))
    for period in ("train", "valid"):
        for data in splits[period].values():
            used = set(data.item_rows[data.labels > 0.5].tolist())
            used |= set(data.seed_rows.tolist()) | set(data.seq_rows.flatten().tolist())
            assert not used & cold_rows
    assert (table.model_id[small.cold] == UNKNOWN_ITEM_ID).all()
    assert small.info["stats"]["truth_cold"] > 0
    truth, seen = (set(map(tuple, a.tolist())) for a in (small.truth, small.seen))
    assert not truth & seen


def test_user_metrics_average_several_relevant_items_per_user() -> None:
    ranks, users = np.array([0.0, 30.0, 60.0]), np.array([7, 7, 9])
    m = user_metrics(ranks, users)
    assert m["queries"] == 2
    assert m["recall@20"] == pytest.approx(0.25) and m["recall@50"] == pytest.approx(0.5)
    assert m["ndcg@50"] == pytest.approx((1 + 1 / np.log2(32)) / (1 + 1 / np.log2(3)) / 2)


def test_items_rated_before_the_test_are_not_candidates(small: Benchmark) -> None:
    n_items = len(small.splits.table)
    liked = np.zeros((len(small.splits["test"]["u2v"]), n_items), dtype=np.float32)
    liked[small.truth[:, 0], small.truth[:, 1]] = 1.0
    liked[small.seen[:, 0], small.seen[:, 1]] = 2.0  # would outrank the truth if allowed
    ranks = truth_ranks(lambda data, rows: torch.from_numpy(liked[rows.numpy()]), small)
    per_user = np.bincount(small.truth[:, 0])[small.truth[:, 0]]
    assert np.allclose(ranks, (per_user - 1) / 2)  # only the tied truth items come first


# ---------------------------------------------------------------------------------------------
# Training


def test_short_training_lowers_the_loss(small: Benchmark) -> None:
    train_config = TrainConfig(epochs=2, batch_size=128, lr=5e-3, max_seq_len=MAX_SEQ_LEN)
    config = model_config(
        small.splits.table, train_config, item_fields=MODEL_FIELDS, n_categories=19, **SMALL_MODEL
    )
    table = small.splits.table
    before = mean_bce(TwoTowerRecall(config), small.splits["valid"], table)
    result = fit(config, small.splits, train_config, "test")
    after = mean_bce(result.model, small.splits["valid"], table)
    assert after < before - 0.05
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]


def test_the_run_writes_the_table(ml: MovieLens, tmp_path: Path) -> None:
    sub = subsample(ml, n_users=100, n_items=100, seed=1)
    settings = Settings(workspace=tmp_path, torch_threads=1)
    train_config = TrainConfig(epochs=1, batch_size=256, max_seq_len=MAX_SEQ_LEN)
    report = train_movielens(settings, train_config, SplitConfig(seed=1), sub)
    out = settings.artifacts_dir / ARTIFACT_DIR
    assert {p.name for p in out.iterdir()} >= {"report.md", "metrics.json", "recall_at_k.png"}
    methods = read_json(out / "metrics.json")["evaluation"]["methods"]
    assert set(methods) == {"popularity", "content-only", "two-tower", "id-only"}
    for result in methods.values():
        for segment in ("all", "warm", "cold"):
            row = result["all"][segment]
            if not row["queries"]:  # a tiny subsample may have no cold truth
                continue
            assert all(0 <= row[m] <= 1 for m in ("recall@20", "recall@100", "ndcg@50"))
            assert row["recall@20"] <= row["recall@50"] <= row["recall@100"]
    assert "| two-tower | cold |" in (out / "report.md").read_text()
    assert report["stats"]["test_users_evaluated"] > 0
