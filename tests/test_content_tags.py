"""Tag heads and fusion: trained on real encoder outputs, they beat majority baselines on
held-out items; training is deterministic; metrics are computed correctly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from content_fixtures import encoders, write_world

from content import tag_heads as th
from content.encoding import EncodeConfig, encode_batch
from content.inputs import Prepared, prepare, read_items
from mmrec.vocab import CATEGORIES, FUSED_DIM, QUALITY_LABELS

N_ITEMS = 200


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real text + image embeddings of a small labelled world (no videos: they are tested
    with the encoders; here the heads are the subject)."""
    raw = tmp_path_factory.mktemp("tags") / "raw"
    write_world(raw, N_ITEMS, seed=11, defects=False, video_share=0.0)
    items = read_items(raw)
    media = pd.read_parquet(raw / "item_media.parquet").set_index("item_id")
    prepared = [
        prepare(row, {"cover_png": media.cover_png[row["item_id"]], "frame_pngs": []})
        for row in items.to_dict("records")
    ]
    assert all(isinstance(p, Prepared) for p in prepared)
    ids, text, visual, failed = encode_batch(encoders(), prepared, EncodeConfig())
    assert not failed and ids == items.item_id.tolist()
    labels_frame = pd.read_parquet(raw / "item_labels.parquet").merge(
        items[["item_id", "category"]], on="item_id"
    )
    labels = th.encode_labels(
        [list(t) for t in labels_frame.category_tags],
        labels_frame.quality_label.tolist(),
        labels_frame.category.tolist(),
    )
    return text, visual, labels, items.item_id.to_numpy()


@pytest.fixture(scope="module")
def trained(data):
    text, visual, labels, ids = data
    return th.fit_and_evaluate(
        text, visual, labels, ids, base_version="test", config=th.HeadConfig(seed=3)
    )


def test_heads_beat_majority_baselines_on_held_out_items(trained):
    m = trained.metrics
    assert m["n_test"] == round(N_ITEMS * 0.2)
    assert m["category"]["micro_f1"] > m["category_baseline_most_frequent_tag"]["micro_f1"] + 0.3
    assert m["category"]["macro_f1"] > m["category_baseline_most_frequent_tag"]["macro_f1"] + 0.3
    assert (
        m["category"]["primary_accuracy"]
        > m["category_baseline_most_frequent_tag"]["primary_accuracy"] + 0.3
    )
    assert m["category_baseline_per_label_majority"]["micro_f1"] == 0.0
    assert m["quality"]["accuracy"] > m["quality_baseline_majority"]["accuracy"] + 0.1
    assert m["quality"]["macro_f1"] > m["quality_baseline_majority"]["macro_f1"] + 0.2
    assert set(m["ablations"]) == {"text_only", "visual_only"}


def test_predictions_are_well_formed(trained, data):
    text, visual, _, _ = data
    pred = th.predict(trained.model, text, visual)
    n = len(text)
    assert pred.fused.shape == (n, FUSED_DIM) and pred.fused.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pred.fused, axis=1), 1.0, atol=1e-5)
    assert pred.category_probs.shape == (n, len(CATEGORIES))
    tags = pred.category_tags()
    assert all(t and set(t) <= set(CATEGORIES) for t in tags)
    assert [t[0] for t in tags] == [CATEGORIES[i] for i in pred.category_probs.argmax(axis=1)]
    assert set(pred.quality_labels()) <= set(QUALITY_LABELS)
    assert ((pred.quality_score >= 0) & (pred.quality_score <= 1)).all()


def test_training_is_deterministic(data):
    text, visual, labels, ids = data
    config = th.HeadConfig(seed=5, max_epochs=5)
    a, _ = th.train_heads(text, visual, labels, ids, config)
    b, _ = th.train_heads(text, visual, labels, ids, config)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch_equal(x, y), name
    assert th.heads_version("v", config, ids, labels) == th.heads_version(
        "v", config, ids[::-1].copy(), reversed_labels(labels)
    )
    assert th.heads_version("v", config, ids, labels) != th.heads_version("w", config, ids, labels)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def reversed_labels(labels: th.Labels) -> th.Labels:
    return th.Labels(
        labels.category[::-1].copy(), labels.quality[::-1].copy(), labels.primary[::-1].copy()
    )


def test_save_and_load_round_trip(trained, data, tmp_path):
    text, visual, _, _ = data
    path = th.save(trained, tmp_path / "heads.pt")
    loaded = th.load(path)
    assert loaded.version == trained.version and loaded.metrics == trained.metrics
    np.testing.assert_array_equal(
        th.predict(loaded.model, text, visual).fused, th.predict(trained.model, text, visual).fused
    )


def test_split_is_stable_and_order_free():
    ids = np.arange(100, 200)
    mask = th.split(ids, 0.2, seed=0)
    assert mask.sum() == 20
    shuffled = np.random.default_rng(1).permutation(ids)
    assert set(shuffled[th.split(shuffled, 0.2, seed=0)]) == set(ids[mask])
    assert th.split(np.array([7]), 0.2, 0).sum() == 0  # one item: nothing to hold out


def test_metric_functions():
    truth = np.array([[1, 0, 1], [0, 1, 0]], bool)
    pred = np.array([[1, 0, 0], [0, 1, 1]], bool)
    scores = th.multilabel_f1(truth, pred)
    assert scores["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["exact_match"] == 0.0
    assert scores["macro_f1"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    mc = th.multiclass(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 3)
    assert mc["accuracy"] == 0.75
    assert mc["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.8) / 3)
    # a label neither true nor predicted anywhere has no F1: left out of the macro mean
    never = np.zeros((2, 1), bool)
    wider = th.multilabel_f1(np.hstack([truth, never]), np.hstack([pred, never]))
    assert wider == scores
    assert th.multiclass(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 5) == mc


def test_labels_outside_the_vocabulary():
    """Category tags outside the vocabulary are ignored and counted; a null quality is no
    label; an unknown quality grade is an error."""
    labels = th.encode_labels(
        [["gadgets", "electronics"], ["gadgets", "comics"]],
        ["low", None],
        ["electronics", "comics"],
    )
    assert labels.unknown_tags == {"gadgets": 2, "comics": 1}
    assert labels.category.sum() == 1 and labels.category[0, CATEGORIES.index("electronics")]
    assert labels.quality.tolist() == [QUALITY_LABELS.index("low"), th.NO_LABEL]
    assert labels.primary.tolist() == [CATEGORIES.index("electronics"), th.NO_LABEL]
    with pytest.raises(ValueError, match="unknown quality"):
        th.encode_labels([["electronics"]], ["great"], ["electronics"])


def _renamed(labels: th.Labels, categories: tuple[str, ...]) -> th.Labels:
    return replace(labels, categories=categories)


def test_category_head_over_the_data_vocabulary(data):
    """The head's width and names are the data's categories; the version names them."""
    text, visual, labels, ids = data
    genres = tuple(f"genre_{k}" for k in range(len(CATEGORIES)))
    config = th.HeadConfig(seed=5, max_epochs=5)
    model, _ = th.train_heads(text, visual, _renamed(labels, genres), ids, config)
    pred = th.predict(model, text, visual)
    assert pred.category_probs.shape == (len(ids), len(genres))
    assert all(set(t) <= set(genres) for t in pred.category_tags())
    assert th.heads_version("v", config, ids, _renamed(labels, genres)) != th.heads_version(
        "v", config, ids, labels
    )
    narrow = th.encode_labels([["b"], ["a", "c"]], [None, None], ["b", "a"], ("a", "b", "c"))
    assert narrow.category.tolist() == [[0, 1, 0], [1, 0, 1]]


def test_quality_head_trains_only_on_labelled_items(data):
    text, visual, labels, ids = data
    config = th.HeadConfig(seed=5, max_epochs=5)
    few = labels.quality.copy()
    few[th.MIN_QUALITY_LABELS - 1 :] = th.NO_LABEL
    model, _ = th.train_heads(text, visual, replace(labels, quality=few), ids, config)
    assert model.quality is None
    pred = th.predict(model, text, visual)
    assert pred.quality_score is None and pred.quality_labels() == [None] * len(ids)
    half = labels.quality.copy()
    half[::2] = th.NO_LABEL
    trained = th.fit_and_evaluate(
        text, visual, replace(labels, quality=half), ids, "v", config, ablations=False
    )
    assert trained.model.quality is not None
    assert np.isfinite(trained.metrics["training"]["val_loss"])
    assert 0.0 <= trained.metrics["quality"]["accuracy"] <= 1.0


def test_items_without_an_image_fuse_their_text_alone(trained, data):
    text, visual, _, _ = data
    has_visual = np.ones(len(text), bool)
    has_visual[:5] = False
    other = visual.copy()
    other[:5] = visual[5:10]
    a = th.predict(trained.model, text, visual, has_visual=has_visual)
    b = th.predict(trained.model, text, other, has_visual=has_visual)
    np.testing.assert_array_equal(a.fused[:5], b.fused[:5])  # the image plays no part
    full = th.predict(trained.model, text, visual).fused
    np.testing.assert_allclose(a.fused[5:], full[5:], atol=1e-6)  # the others keep theirs
    assert not np.allclose(a.fused[:5], full[:5], atol=1e-3)
    text_only = th.ContentHeads(replace(th.HeadConfig(), modalities=("text",)))
    assert th.predict(text_only, text, None).fused.shape == (len(text), FUSED_DIM)


def test_one_modality_config():
    with pytest.raises(ValueError):
        th.ContentHeads(replace(th.HeadConfig(), modalities=("audio",)))
