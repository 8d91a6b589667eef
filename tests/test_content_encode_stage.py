"""The `content encode` stage: skips bad items, resumes, never mixes versions, publishes
Feast-readable sources, and runs from the CLI."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from content_fixtures import encoders, make_settings, quick_config, read_source, write_world
from typer.testing import CliRunner

from content import encode as stage
from content.cli import app as content_app
from content.encode_cache import cache_dir, read_parts
from content.encoding import ENCODER_NAME, EncodeConfig, Encoders
from content.publish import ITEM_EMBEDDINGS, ITEM_TAGS
from mmrec.errors import UserError
from mmrec.settings import REPO_ROOT
from mmrec.vocab import CATEGORIES, FUSED_DIM, TEXT_DIM, VISUAL_DIM
from mmrec.workspace import init_workspace

N_ITEMS = 40
QUICK = quick_config()


def _workspace(root: Path, n_items: int = N_ITEMS, seed: int = 0):
    settings = make_settings(root)
    defects = write_world(settings.raw_dir, n_items, seed=seed)
    return settings, defects


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    settings, defects = _workspace(tmp_path_factory.mktemp("stage"))
    report = stage.run_encode(settings, QUICK, encoders())
    return settings, defects, report


def test_bad_items_are_skipped_with_a_reason_and_counted(encoded, caplog):
    settings, defects, report = encoded
    assert report.skipped_by_reason == {
        "empty_title": 1,
        "missing_media": 1,
        "unreadable_cover": 1,
        "video_without_frames": 1,
    }
    assert report.n_skipped == 4 and report.n_ok == N_ITEMS - 4 and report.n_items == N_ITEMS
    bad = set(
        defects.empty_title
        + defects.unreadable_cover
        + defects.video_without_frames
        + defects.missing_media
    )
    published = set(read_source(settings, ITEM_EMBEDDINGS).item_id)
    assert not published & bad
    assert len(published) == N_ITEMS - 4


def test_skips_are_logged(tmp_path, caplog):
    settings, defects = _workspace(tmp_path, n_items=12, seed=4)
    with caplog.at_level("WARNING", logger="content.encode"):
        stage.run_encode(settings, QUICK, encoders())
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for item_id, reason in [
        (defects.empty_title[0], "empty_title"),
        (defects.unreadable_cover[0], "unreadable_cover"),
        (defects.video_without_frames[0], "video_without_frames"),
        (defects.missing_media[0], "missing_media"),
    ]:
        assert f"skip item {item_id}: {reason}" in messages


def test_published_sources_have_the_contract_schema(encoded):
    settings, _, report = encoded
    emb = read_source(settings, ITEM_EMBEDDINGS)
    tags = read_source(settings, ITEM_TAGS)
    items = pd.read_parquet(settings.raw_dir / "items.parquet").set_index("item_id")
    for frame in (emb, tags):
        assert (frame.encoder_name == ENCODER_NAME).all()
        assert (frame.encoder_version == report.encoder_version).all()
        # stamped with the publish time: a point-in-time join sees it from publish on
        assert (
            frame.event_timestamp.to_numpy() == items.publish_ts.reindex(frame.item_id).to_numpy()
        ).all()
    assert emb.text_emb.map(len).eq(TEXT_DIM).all()
    assert emb.visual_emb.map(len).eq(VISUAL_DIM).all()
    assert emb.fused_emb.map(len).eq(FUSED_DIM).all()
    np.testing.assert_allclose(np.linalg.norm(np.stack(emb.text_emb), axis=1), 1.0, atol=1e-5)
    assert tags.category_tags.map(lambda t: len(t) >= 1 and set(t) <= set(CATEGORIES)).all()
    assert tags.category_probs.map(len).eq(len(CATEGORIES)).all()
    assert tags.quality_label.isin(["low", "medium", "high"]).all()
    assert tags.quality_score.between(0, 1).all()
    schema = pq.read_schema(next((settings.offline_dir / ITEM_EMBEDDINGS).glob("*/*.parquet")))
    assert str(schema.field("text_emb").type) == "list<element: float>"
    assert str(schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    # one partition per publish month, in the layout of the other offline sources
    months = {p.parent.name for p in (settings.offline_dir / ITEM_TAGS).glob("*/part.parquet")}
    assert months == {f"month={d:%Y-%m}" for d in items.publish_ts.reindex(tags.item_id)}
    assert (settings.artifacts_dir / "content" / "encode_report.json").exists()
    assert (settings.artifacts_dir / "content" / "tag_heads_metrics.json").exists()


def test_rerun_reuses_everything(encoded):
    settings, _, report = encoded
    again = stage.run_encode(settings, QUICK, encoders())
    assert again.n_encoded_now == 0 and again.n_reused == N_ITEMS
    assert again.encoder_version == report.encoder_version
    assert again.tag_model_version == report.tag_model_version
    assert again.skipped_by_reason == report.skipped_by_reason


def test_resume_after_a_partial_run_and_a_lost_part(tmp_path):
    settings, _ = _workspace(tmp_path, n_items=24, seed=2)
    first = stage.run_encode(settings, replace(QUICK, batch_size=4, limit=10), encoders())
    assert first.n_items == 10 and first.n_encoded_now + first.n_skipped == 10
    folder = cache_dir(settings, first.encoder_version)
    parts = sorted(folder.glob("part-*.parquet"))
    lost = set(pd.read_parquet(parts[-1]).item_id)
    parts[-1].unlink()  # as if the run had died before writing its last batch
    second = stage.run_encode(settings, replace(QUICK, batch_size=4), encoders())
    assert second.n_reused == 10 - len(lost)
    assert second.n_items == 24 and second.n_reused + second.n_encoded_now + second.n_skipped >= 24
    done = read_parts(folder)
    assert sorted(done.item_id) == list(range(1, 25))  # every item recorded exactly once


def test_changed_inputs_are_re_encoded_not_served_stale(tmp_path):
    """A cached embedding is reused only for the very same title and media."""
    settings, _ = _workspace(tmp_path, n_items=16, seed=7)
    first = stage.run_encode(settings, QUICK, encoders())
    items = pd.read_parquet(settings.raw_dir / "items.parquet")
    ok_ids = sorted(set(read_source(settings, ITEM_EMBEDDINGS).item_id))
    target = ok_ids[3]
    items.loc[items.item_id == target, "title"] = "Unboxing my new premium dark chocolate"
    items.to_parquet(settings.raw_dir / "items.parquet")
    second = stage.run_encode(settings, QUICK, encoders())
    assert second.n_encoded_now == 1 and second.n_reused == 15
    assert second.encoder_version == first.encoder_version
    emb = read_source(settings, ITEM_EMBEDDINGS).set_index("item_id")
    expected = encoders().text.encode(["Unboxing my new premium dark chocolate"])[0]
    np.testing.assert_allclose(emb.text_emb[target], expected, atol=1e-5)
    # a whole new world in the same workspace (same item ids, other content)
    write_world(settings.raw_dir, 16, seed=8)
    third = stage.run_encode(settings, QUICK, encoders())
    assert third.n_reused < 4  # only items that happen to be identical could be reused


def test_a_new_encoder_version_never_mixes_with_the_old(tmp_path):
    settings, _ = _workspace(tmp_path, n_items=16, seed=3)
    onnx = stage.run_encode(settings, QUICK, encoders("onnxruntime"))
    torch_run = stage.run_encode(settings, replace(QUICK, image_backend="torch"), encoders("torch"))
    assert torch_run.encoder_version != onnx.encoder_version
    assert torch_run.n_reused == 0  # nothing of the other version is reused
    for name in (ITEM_EMBEDDINGS, ITEM_TAGS):
        frame = read_source(settings, name)
        assert set(frame.encoder_version) == {torch_run.encoder_version}
    assert not list(settings.offline_dir.glob(".item_*"))  # no staging leftovers
    # both caches are kept, each in its own version folder
    assert cache_dir(settings, onnx.encoder_version).exists()


class _Flaky:
    """A text encoder that fails on one title, to show a model error skips one item only."""

    def __init__(self, inner, poison: str):
        self.inner, self.poison, self.version = inner, poison, inner.version

    def encode(self, texts, batch_size=64):
        if any(self.poison in t for t in texts):
            raise RuntimeError("model exploded")
        return self.inner.encode(texts, batch_size)


def test_a_model_error_skips_one_item_not_the_batch(tmp_path):
    settings, _ = _workspace(tmp_path, n_items=16, seed=5)
    items = pd.read_parquet(settings.raw_dir / "items.parquet")
    victim = items[items.title.str.strip() != ""].iloc[5]
    items.loc[items.item_id == victim.item_id, "title"] = "POISON " + victim.title
    items.to_parquet(settings.raw_dir / "items.parquet")
    real = encoders()
    flaky = Encoders(text=_Flaky(real.text, "POISON"), image=real.image)  # type: ignore[arg-type]
    report = stage.run_encode(settings, QUICK, flaky)
    assert report.skipped_by_reason.get("encode_error") == 1
    assert victim.item_id not in set(read_source(settings, ITEM_EMBEDDINGS).item_id)


def test_missing_world_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="generate a world"):
        stage.run_encode(make_settings(tmp_path), QUICK, encoders())


def test_cli_encode(tmp_path, monkeypatch):
    settings, _ = _workspace(tmp_path, n_items=12, seed=6)
    init_workspace(settings.workspace)  # the CLI checks for a workspace (its data is there)
    monkeypatch.setattr(Encoders, "load", classmethod(lambda cls, *a, **k: encoders()))
    args = [
        "encode",
        "--batch-size",
        "4",
        "--limit",
        "12",
        "--threads",
        "2",
        "--no-progress",
        "--workspace",
        str(settings.workspace),
    ]
    result = CliRunner().invoke(content_app, args)
    assert result.exit_code == 0, result.output
    assert "items encoded" in result.output and "skipped" in result.output
    assert "held-out" in result.output
    bad = CliRunner().invoke(
        content_app, ["encode", "--batch-size", "0", "--workspace", str(settings.workspace)]
    )
    assert bad.exit_code == 2 and "batch size" in bad.output


@pytest.mark.slow
def test_feast_reads_both_views_point_in_time(encoded, tmp_path):
    """Apply the real feature repo over the published sources and join them point in time."""
    from mmrec.feast_store import apply_repo, open_store

    settings, _, report = encoded
    shutil.copytree(
        REPO_ROOT / "feature_repo",
        settings.feature_repo,
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
    apply_repo(settings)
    store = open_store(settings)
    assert {"item_embeddings", "item_tags"} <= {v.name for v in store.list_feature_views()}
    emb = read_source(settings, ITEM_EMBEDDINGS).head(3)
    before = emb.event_timestamp - pd.Timedelta(minutes=5)
    after = emb.event_timestamp + pd.Timedelta(minutes=5)
    entity = pd.DataFrame(
        {"item_id": list(emb.item_id) * 2, "event_timestamp": list(before) + list(after)}
    )
    got = store.get_historical_features(
        entity_df=entity,
        features=[
            "item_embeddings:fused_emb",
            "item_embeddings:encoder_version",
            "item_tags:quality_label",
            "item_tags:category_tags",
        ],
    ).to_df()
    got = got.sort_values(["item_id", "event_timestamp"]).reset_index(drop=True)
    early, late = got.iloc[0::2], got.iloc[1::2]
    assert early.encoder_version.isna().all()  # not yet published: nothing to see
    assert (late.encoder_version == report.encoder_version).all()
    assert late.fused_emb.map(len).eq(FUSED_DIM).all()
    assert late.category_tags.map(len).ge(1).all()


@pytest.mark.slow
def test_real_generator_world_skips_exactly_its_defects(tmp_path):
    """On the generator's tiny world, the skip counts are the defects its manifest declares."""
    from cli.main import app
    from mmrec.io import read_json

    settings = make_settings(tmp_path)
    result = CliRunner().invoke(
        app, ["generate", "--scale", "tiny", "--seed", "1", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    report = stage.run_encode(
        settings, EncodeConfig(batch_size=64, show_progress=False), encoders()
    )
    defects = {
        k: v for k, v in read_json(settings.raw_dir / "manifest.json")["defects"].items() if v
    }
    assert report.skipped_by_reason == defects
    m = report.tag_metrics
    assert m["category"]["micro_f1"] > m["category_baseline_most_frequent_tag"]["micro_f1"] + 0.3
    assert m["quality"]["accuracy"] > m["quality_baseline_majority"]["accuracy"] + 0.1
