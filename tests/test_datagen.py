"""The synthetic world: deterministic per seed, schema contracts, no leakage, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from datagen.world import WorldExistsError, generate_world
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES, EVENT_TYPES, MATERIALS, POSITIONS, SOURCES
from tests.conftest import TINY_SEED, data_workspace, make_workspace


def _all_events(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(settings.raw_dir / "events")


def test_same_seed_gives_identical_world(tiny_world: Settings, tmp_path: Path) -> None:
    again = Settings(workspace=tmp_path)
    generate_world(again, "tiny", TINY_SEED)
    for name in (
        "items.parquet",
        "users.parquet",
        "skus.parquet",
        "item_labels.parquet",
        "item_media.parquet",
    ):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tiny_world.raw_dir / name), pd.read_parquet(again.raw_dir / name)
        )
    pd.testing.assert_frame_equal(_all_events(tiny_world), _all_events(again))


def test_regenerating_the_same_world_is_safe(tiny_world: Settings, tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    first = generate_world(settings, "tiny", 3)
    second = generate_world(settings, "tiny", 3)
    assert first == second


def test_other_seed_is_refused_without_force(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    generate_world(settings, "tiny", 3)
    with pytest.raises(WorldExistsError, match="--force"):
        generate_world(settings, "tiny", 4)
    assert generate_world(settings, "tiny", 4, force=True)["seed"] == 4


def test_strong_modality_taste_keeps_the_catalog(tiny_world: Settings, tmp_path: Path) -> None:
    strong = Settings(workspace=tmp_path)
    manifest = generate_world(strong, "tiny", TINY_SEED, modality_taste="strong")
    assert manifest["modality_taste"] == "strong"
    for name in ("items.parquet", "skus.parquet"):  # the same catalog; other users
        pd.testing.assert_frame_equal(
            pd.read_parquet(tiny_world.raw_dir / name), pd.read_parquet(strong.raw_dir / name)
        )

    def dominant_share(settings: Settings) -> pd.Series:
        prefs = pd.read_parquet(settings.truth_dir / "users_latent.parquet")[
            ["pref_visual", "pref_text", "pref_popularity"]
        ]
        return prefs.max(axis=1) / prefs.sum(axis=1)

    # Dirichlet(1) vs Dirichlet(0.25): one modality dominates for most users
    assert dominant_share(tiny_world).median() < 0.7 < dominant_share(strong).median()
    latent = pd.read_parquet(strong.truth_dir / "users_latent.parquet")
    assert latent[["pref_visual", "pref_text"]].max().max() > 1.0  # content x 2
    with pytest.raises(WorldExistsError, match="modality_taste=strong"):
        generate_world(strong, "tiny", TINY_SEED)


def test_catalog_contracts(tiny_world: Settings) -> None:
    items = pd.read_parquet(tiny_world.raw_dir / "items.parquet")
    assert items.item_id.is_unique
    assert set(items.material) <= set(MATERIALS)
    assert set(items.category) <= set(CATEGORIES)
    assert items.sku_ids.map(len).min() >= 1
    assert items.publish_ts.notna().all()
    labels = pd.read_parquet(tiny_world.raw_dir / "item_labels.parquet")
    assert (labels.category_tags.map(lambda tags: tags[0]) == items.category).all()


def test_every_item_has_real_pixels_and_videos_have_frames(tiny_world: Settings) -> None:
    media = pd.read_parquet(tiny_world.raw_dir / "item_media.parquet")
    items = pd.read_parquet(tiny_world.raw_dir / "items.parquet").set_index("item_id")
    defects = pd.read_json(tiny_world.raw_dir / "manifest.json", typ="series")["defects"]
    readable = 0
    for row in media.itertuples():
        try:
            image = Image.open(io.BytesIO(row.cover_png))
            image.load()
        except OSError:
            continue
        readable += 1
        assert image.size == (64, 64) and image.mode == "RGB"
        if items.at[row.item_id, "material"] != "video":
            assert len(row.frame_pngs) == 0
    assert readable == len(media) - defects["unreadable_cover"]
    videos = media[media.item_id.map(items.material) == "video"]
    assert (videos.frame_pngs.map(len) == 4).sum() == len(videos) - defects["video_without_frames"]


def test_event_log_contracts(tiny_world: Settings) -> None:
    events = _all_events(tiny_world)
    assert set(events.event_type) <= set(EVENT_TYPES)
    assert events.event_timestamp.notna().all()
    content = events[events.item_id.notna()]
    assert set(content.source) <= set(SOURCES) and set(content.position) <= set(POSITIONS)
    product = events[events.item_id.isna()]
    assert product.sku_id.notna().all()
    assert set(product.event_type) == {"sku_click", "sku_cart", "sku_purchase"}
    # no item is shown before it is published
    published = (
        pd.read_parquet(tiny_world.raw_dir / "items.parquet").set_index("item_id").publish_ts
    )
    assert (content.event_timestamp.to_numpy() >= content.item_id.map(published).to_numpy()).all()
    # every click follows an impression of the same item in the same session
    shown = set(
        zip(
            *events.loc[events.event_type == "impression", ["session_id", "item_id"]].T.values,
            strict=True,
        )
    )
    clicks = events.loc[events.event_type == "click", ["session_id", "item_id"]]
    assert all(pair in shown for pair in zip(clicks.session_id, clicks.item_id, strict=True))


def test_hidden_structure_is_learnable(tiny_world: Settings) -> None:
    """Users click their latent favourite categories more: the truth drives behaviour."""
    events = _all_events(tiny_world)
    latent = pd.read_parquet(tiny_world.truth_dir / "users_latent.parquet").set_index("user_id")
    items = pd.read_parquet(tiny_world.raw_dir / "items.parquet").set_index("item_id")
    shown = events[events.event_type == "impression"].copy()
    clicked = set(
        zip(
            *events.loc[events.event_type == "click", ["session_id", "item_id"]].T.values,
            strict=True,
        )
    )
    shown["clicked"] = [
        pair in clicked for pair in zip(shown.session_id, shown.item_id, strict=True)
    ]
    cat_idx = shown.item_id.map(items.category).map({c: i for i, c in enumerate(CATEGORIES)})
    shown["interest"] = [
        latent.at[u, "category_interest"][c] for u, c in zip(shown.user_id, cat_idx, strict=True)
    ]
    high = shown[shown.interest > 0.2].clicked.mean()
    low = shown[shown.interest < 0.02].clicked.mean()
    assert high > 2 * low


@pytest.mark.parametrize(
    ("args", "message", "data"),
    [
        (["generate", "--scale", "huge"], "unknown scale", False),
        (["generate", "--scale", "tiny", "--seed", "-1"], "seed must be >= 0", False),
        (["generate", "--scale", "tiny", "--modality-taste", "weak"], "unknown modality taste",
         False),
        (["features", "build"], "mmrec generate", False),
        (["features", "materialize"], "mmrec generate", False),
        (["features", "materialize", "--end", "yesterday"], "not an ISO time", True),
        (["features", "show", "--user-id", "1", "--item-id", "1"], "mmrec features apply", True),
        (["features", "apply", "--online-store", "mongo"], "not supported", False),
        (["features", "apply", "--offline-store", "bigquery"], "MMREC_OFFLINE_STORE", False),
        (
            ["features", "show", "--user-id", "1", "--item-id", "1", "--offline-store", "spark"],
            "mmrec features apply --offline-store spark",
            True,
        ),
    ],
)  # fmt: skip
def test_bad_arguments_exit_non_zero_with_a_message(
    args: list[str], message: str, data: bool, tmp_path: Path
) -> None:
    (data_workspace if data else make_workspace)(tmp_path)  # data: past the workspace check
    result = CliRunner().invoke(app, [*args, "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
