"""The content stage adapts to what the data carries, as the manifest's profile declares it:
a text-only catalog with its own categories and no quality labels, a catalog with some covers
missing, one without video frames, labels partly outside the category vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from content_fixtures import (
    Defects,
    encoders,
    genres,
    make_settings,
    make_text_only,
    quick_config,
    read_source,
    write_manifest,
    write_world,
)

from content import encode as stage
from content import tag_heads as th
from content.encoding import ENCODER_NAME, Encoders, encoder_spec, spec_version
from content.image_encoder import decode_image
from content.publish import ITEM_EMBEDDINGS, ITEM_TAGS
from mmrec.errors import UserError
from mmrec.io import read_json
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES, FUSED_DIM, TEXT_DIM, VISUAL_DIM

N_ITEMS = 40
N_GENRES = 7  # a width unlike mmrec.vocab.CATEGORIES' 12
QUICK = quick_config()


@dataclass
class World:
    settings: Settings
    defects: Defects
    report: stage.EncodeReport


def _media(settings: Settings) -> pa.Table:
    return pq.read_table(settings.raw_dir / "item_media.parquet")


def _null_covers(settings: Settings, item_ids: list[int]) -> None:
    """Give these items a null cover (the data says they have none)."""
    media = _media(settings)
    covers = media.column("cover_png").to_pylist()
    for row, item_id in enumerate(media.column("item_id").to_pylist()):
        if item_id in item_ids:
            covers[row] = None
    media = media.set_column(1, "cover_png", pa.array(covers, pa.binary()))
    pq.write_table(media, settings.raw_dir / "item_media.parquet")


@pytest.fixture(scope="module")
def text_only(tmp_path_factory) -> World:
    settings = make_settings(tmp_path_factory.mktemp("text-only"))
    defects = write_world(settings.raw_dir, N_ITEMS, seed=21)
    make_text_only(settings.raw_dir, N_GENRES)
    # no image encoder at all: a run that touched one would fail
    return World(settings, defects, stage.run_encode(settings, QUICK, encoders(None)))


def test_text_only_catalog_encodes_every_titled_item(text_only):
    settings, defects, report = text_only.settings, text_only.defects, text_only.report
    # covers, frames and media rows do not matter without images: only the empty title skips
    assert report.skipped_by_reason == {"empty_title": 1}
    assert report.n_ok == N_ITEMS - 1
    published = set(read_source(settings, ITEM_EMBEDDINGS).item_id)
    assert published == set(range(1, N_ITEMS + 1)) - set(defects.empty_title)
    assert report.encoder_name == "all-MiniLM-L6-v2+none"
    assert report.encoder_spec["image"] == report.encoder_spec["video"] == "none"
    with_images = spec_version(encoder_spec(QUICK, encoders()))
    assert report.encoder_version != with_images  # parts of the two specs never mix


def test_text_only_sources_say_what_is_missing(text_only):
    settings, report = text_only.settings, text_only.report
    emb = read_source(settings, ITEM_EMBEDDINGS)
    tags = read_source(settings, ITEM_TAGS)
    assert emb.visual_emb.isna().all()  # null, not zeros: no visual modality
    assert (emb.visual_encoder == "none").all()
    assert (emb.encoder_name == report.encoder_name).all()
    assert emb.text_emb.map(len).eq(TEXT_DIM).all()
    fused = np.stack(emb.fused_emb)
    assert fused.shape == (len(emb), FUSED_DIM)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    schema = pq.read_schema(next((settings.offline_dir / ITEM_EMBEDDINGS).rglob("*.parquet")))
    assert str(schema.field("visual_emb").type) == "list<element: float>"
    # the data's categories, in the manifest's order
    assert tags.category_probs.map(len).eq(N_GENRES).all()
    assert tags.category_tags.map(lambda t: len(t) >= 1 and set(t) <= set(genres(N_GENRES))).all()
    assert tags.quality_label.isna().all() and tags.quality_score.isna().all()
    assert report.tag_metrics["quality"] is None
    assert tuple(report.tag_metrics["config"]["modalities"]) == ("text",)


def test_text_only_rerun_is_a_no_op(text_only):
    settings, report = text_only.settings, text_only.report
    before = read_source(settings, ITEM_TAGS)
    again = stage.run_encode(settings, QUICK, encoders(None))
    assert again.n_encoded_now == 0 and again.n_reused == N_ITEMS
    assert (again.encoder_version, again.tag_model_version) == (
        report.encoder_version,
        report.tag_model_version,
    )
    after = read_source(settings, ITEM_TAGS)
    np.testing.assert_array_equal(np.stack(before.category_probs), np.stack(after.category_probs))


def test_text_only_run_loads_no_image_encoder(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    write_world(settings.raw_dir, 12, seed=22)
    make_text_only(settings.raw_dir, N_GENRES)
    asked = []

    def load(cls, config, threads, cache_dir=None, image=True):
        asked.append(image)
        return encoders(None)

    monkeypatch.setattr(Encoders, "load", classmethod(load))
    stage.run_encode(settings, QUICK)
    assert asked == [False]


def test_labels_outside_the_vocabulary_are_counted(tmp_path):
    settings = make_settings(tmp_path)
    write_world(settings.raw_dir, 24, seed=23, defects=False)
    labels = pd.read_parquet(settings.raw_dir / "item_labels.parquet")
    labels["category_tags"] = [
        [*tags, "mystery"] if i % 4 == 0 else (["gadgets"] if i == 1 else list(tags))
        for i, tags in enumerate(labels.category_tags)
    ]
    labels.to_parquet(settings.raw_dir / "item_labels.parquet")
    report = stage.run_encode(settings, QUICK, encoders())
    assert report.ignored_category_tags == {"mystery": 6, "gadgets": 1}
    saved = read_json(settings.artifacts_dir / "content" / "encode_report.json")
    assert saved["ignored_category_tags"] == {"mystery": 6, "gadgets": 1}
    tags = read_source(settings, ITEM_TAGS)
    assert tags.category_tags.map(lambda t: set(t) <= set(CATEGORIES)).all()


def test_labels_with_no_known_category_name_the_fix(tmp_path):
    settings = make_settings(tmp_path)
    write_world(settings.raw_dir, 12, seed=24, defects=False)
    make_text_only(settings.raw_dir, N_GENRES)
    write_manifest(settings.raw_dir, CATEGORIES, image=False, frames=False)  # the wrong vocabulary
    with pytest.raises(UserError, match=r"fix `categories` in .*manifest\.json"):
        stage.run_encode(settings, QUICK, encoders(None))


def test_a_missing_cover_falls_back_to_text_an_unreadable_one_is_skipped(tmp_path):
    settings = make_settings(tmp_path)
    defects = write_world(settings.raw_dir, 24, seed=25)
    items = pd.read_parquet(settings.raw_dir / "items.parquet")
    bad = set(defects.empty_title + defects.unreadable_cover + defects.missing_media)
    stills = items[(items.material != "video") & ~items.item_id.isin(bad)]
    coverless = [int(i) for i in stills.item_id[:3]]
    _null_covers(settings, coverless)
    report = stage.run_encode(settings, QUICK, encoders())
    assert report.skipped_by_reason == {
        "empty_title": 1,
        "missing_media": 1,
        "unreadable_cover": 1,
        "video_without_frames": 1,
    }
    assert report.encoder_name == ENCODER_NAME
    emb = read_source(settings, ITEM_EMBEDDINGS).set_index("item_id")
    assert emb.visual_emb[coverless].isna().all()
    assert emb.visual_emb.drop(coverless).map(len).eq(VISUAL_DIM).all()
    assert emb.fused_emb.map(len).eq(FUSED_DIM).all()
    again = stage.run_encode(settings, QUICK, encoders())
    assert again.n_encoded_now == 0 and again.tag_model_version == report.tag_model_version


def test_without_frames_videos_are_encoded_from_their_cover(tmp_path):
    settings = make_settings(tmp_path)
    defects = write_world(settings.raw_dir, 16, seed=26)
    with_frames = spec_version(encoder_spec(QUICK, encoders()))
    write_manifest(settings.raw_dir, frames=False)
    report = stage.run_encode(settings, QUICK, encoders())
    assert report.encoder_spec["video"] == "cover"
    assert report.encoder_version != with_frames
    assert "video_without_frames" not in report.skipped_by_reason
    emb = read_source(settings, ITEM_EMBEDDINGS).set_index("item_id")
    video = defects.video_without_frames[0]  # no frames, but a cover
    media = _media(settings).to_pandas().set_index("item_id")
    expected = encoders().image.encode([decode_image(media.cover_png[video])])[0]
    np.testing.assert_allclose(emb.visual_emb[video], expected, atol=1e-5)


def test_saved_heads_reload_only_for_their_categories(text_only):
    settings, report = text_only.settings, text_only.report
    path = settings.artifacts_dir / "content" / "heads" / f"{report.tag_model_version}.pt"
    assert th.load(path, genres(N_GENRES)).version == report.tag_model_version
    with pytest.raises(th.VocabularyMismatch):
        th.load(path, CATEGORIES)


def test_an_image_catalog_where_no_item_has_a_cover_fuses_text_alone(tmp_path):
    settings = make_settings(tmp_path)
    write_world(settings.raw_dir, 12, seed=27, defects=False, video_share=0.0)
    _null_covers(settings, list(range(1, 13)))
    report = stage.run_encode(settings, QUICK, encoders())
    assert report.n_ok == 12 and report.encoder_name == ENCODER_NAME
    assert tuple(report.tag_metrics["config"]["modalities"]) == ("text",)
    assert read_source(settings, ITEM_EMBEDDINGS).visual_emb.isna().all()
