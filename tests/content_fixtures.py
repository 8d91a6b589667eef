"""Helpers for the content tests: small worlds in the generator's data contract, loaded
encoders shared by every test module of a session, and real sample photos.

The fixture world follows the contract of `datagen` (raw/items.parquet, item_media.parquet,
item_labels.parquet, and manifest.json's data profile) with its own small renderer, so these
tests do not depend on the generator's internals: titles name a category's goods with a
quality adjective; the cover's hue encodes the category and its contrast/noise the quality;
videos have 4 frames. `make_text_only` turns it into an imported-looking catalog: no covers or
frames, its own genre vocabulary, no quality labels.
"""

from __future__ import annotations

import functools
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmrec.io import write_json, write_parquet
from mmrec.settings import Settings
from mmrec.vocab import (
    CATEGORIES,
    CATEGORY_NOUNS,
    MATERIALS,
    N_CATEGORIES,
    QUALITY_LABELS,
    WORLD_EPOCH,
)

ADJECTIVES = {
    "low": ("cheap", "knockoff"),
    "medium": ("everyday", "classic"),
    "high": ("premium", "professional"),
}
TEMPLATES = (
    "Honest review of the {adj} {noun}",
    "Unboxing my new {adj} {noun}",
    "Deal alert: {adj} {noun} on sale",
)


@dataclass
class Defects:
    empty_title: list[int]
    unreadable_cover: list[int]
    video_without_frames: list[int]
    missing_media: list[int]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def render(
    category: int, quality: float, phase: float, rng: np.random.Generator, size: int = 64
) -> np.ndarray:
    """A striped picture: hue and stripe angle from the category, contrast and noise from quality."""
    hue = category / N_CATEGORIES
    rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    axis = np.linspace(0, 1, size)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    angle = category * np.pi / N_CATEGORIES
    stripes = np.sin(
        2 * np.pi * (3 + category % 4 * 2) * (x * np.cos(angle) + y * np.sin(angle)) + phase
    )
    img = rgb * (0.55 + (0.25 + 0.6 * quality) * stripes[..., None] * 0.5) + 0.1 * (1 - rgb)
    img = img + rng.normal(0, 0.25 * (1 - quality), img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_world(
    raw_dir: Path, n_items: int = 120, seed: int = 0, defects: bool = True, video_share: float = 0.5
) -> Defects:
    """Write items/media/labels for `n_items` items; with `defects`, a few bad items."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, N_CATEGORIES, n_items)
    quality = rng.beta(2, 2, n_items)
    grade = np.select([quality < 1 / 3, quality < 2 / 3], ["low", "medium"], "high")
    rest = (1 - video_share) / 3
    material = rng.choice(MATERIALS, n_items, p=[video_share, rest, rest, rest])
    item_id = np.arange(1, n_items + 1, dtype=np.int64)
    titles = []
    for c, g in zip(category, grade, strict=True):
        nouns = CATEGORY_NOUNS[CATEGORIES[c]]
        titles.append(
            TEMPLATES[rng.integers(len(TEMPLATES))].format(
                adj=ADJECTIVES[g][rng.integers(2)], noun=nouns[rng.integers(len(nouns))]
            )
        )
    publish = WORLD_EPOCH - pd.to_timedelta(rng.uniform(0, 10 * 86400, n_items), unit="s")
    tags = []
    for c in category:
        extra = (
            [CATEGORIES[(c + 1 + rng.integers(N_CATEGORIES - 1)) % N_CATEGORIES]]
            if rng.random() < 0.25
            else []
        )
        tags.append([CATEGORIES[c], *extra])
    covers = [_png(render(c, q, 0.0, rng)) for c, q in zip(category, quality, strict=True)]
    frames = [
        [_png(render(c, q, p, rng)) for p in np.linspace(0.5, 2.5, 4)] if m == "video" else []
        for c, q, m in zip(category, quality, material, strict=True)
    ]
    bad = Defects([], [], [], [])
    if defects:
        videos = [i for i in range(n_items) if material[i] == "video"]
        others = [i for i in range(n_items) if material[i] != "video"]
        bad.empty_title = [int(item_id[others[0]])]
        titles[others[0]] = "   "
        bad.unreadable_cover = [int(item_id[others[1]])]
        covers[others[1]] = covers[others[1]][:40]  # truncated PNG
        bad.video_without_frames = [int(item_id[videos[0]])]
        frames[videos[0]] = []
        bad.missing_media = [int(item_id[others[2]])]
    items = pd.DataFrame(
        {
            "item_id": item_id,
            "material": material,
            "title": titles,
            "category": np.asarray(CATEGORIES)[category],
            "sku_ids": [np.array([i], dtype=np.int64) for i in item_id],
            "publish_ts": pd.DatetimeIndex(publish).astype("datetime64[us, UTC]"),
            "duration_s": np.where(material == "video", 60.0, 0.0),
        }
    )
    keep = ~np.isin(item_id, bad.missing_media)
    media = pa.table(
        {
            "item_id": pa.array(item_id[keep], pa.int64()),
            "cover_png": pa.array([c for c, k in zip(covers, keep, strict=True) if k], pa.binary()),
            "frame_pngs": pa.array(
                [f for f, k in zip(frames, keep, strict=True) if k], pa.list_(pa.binary())
            ),
        }
    )
    labels = pd.DataFrame({"item_id": item_id, "category_tags": tags, "quality_label": grade})
    assert set(grade) <= set(QUALITY_LABELS)
    write_parquet(items, raw_dir / "items.parquet")
    write_parquet(media, raw_dir / "item_media.parquet")
    write_parquet(labels, raw_dir / "item_labels.parquet")
    write_manifest(raw_dir)
    return bad


def write_manifest(
    raw_dir: Path,
    categories: tuple[str, ...] = CATEGORIES,
    image: bool = True,
    frames: bool = True,
) -> None:
    """The manifest's data profile (mmrec.world_manifest.data_profile reads it)."""
    modalities = {"text": True, "image": image, "frames": frames}
    write_json(
        {"categories": list(categories), "modalities": modalities}, raw_dir / "manifest.json"
    )


def genres(n: int) -> tuple[str, ...]:
    return tuple(f"genre_{k}" for k in range(n))


def make_text_only(raw_dir: Path, n_genres: int = 7) -> tuple[str, ...]:
    """Turn a written world into a text-only catalog: covers and frames null, categories mapped
    onto `n_genres` genres outside mmrec.vocab.CATEGORIES, quality labels null. The genres."""
    vocab = genres(n_genres)
    genre = {c: vocab[i % n_genres] for i, c in enumerate(CATEGORIES)}
    items = pd.read_parquet(raw_dir / "items.parquet")
    items["category"] = items.category.map(genre)
    labels = pd.read_parquet(raw_dir / "item_labels.parquet")
    labels["category_tags"] = [sorted({genre[t] for t in tags}) for tags in labels.category_tags]
    labels["quality_label"] = None
    media = pq.read_table(raw_dir / "item_media.parquet")
    n = media.num_rows
    media = media.set_column(1, "cover_png", pa.nulls(n, pa.binary()))
    media = media.set_column(2, "frame_pngs", pa.array([[]] * n, pa.list_(pa.binary())))
    write_parquet(items, raw_dir / "items.parquet")
    write_parquet(labels, raw_dir / "item_labels.parquet")
    write_parquet(media, raw_dir / "item_media.parquet")
    write_manifest(raw_dir, vocab, image=False, frames=False)
    return vocab


def make_settings(root: Path) -> Settings:
    return Settings(workspace=root, torch_threads=2)


def quick_config(**changes):
    """An EncodeConfig for small worlds: short head training, no ablations (the heads have
    their own tests), small batches."""
    from content.encoding import EncodeConfig
    from content.tag_heads import HeadConfig

    heads = HeadConfig(max_epochs=30, max_steps=300)
    return EncodeConfig(
        **{"batch_size": 8, "show_progress": False, "heads": heads, "ablations": False, **changes}
    )


def read_source(settings: Settings, name: str) -> pd.DataFrame:
    """A published offline source, every partition, sorted by item id."""
    files = sorted((settings.offline_dir / name).glob("*/*.parquet"))
    assert files, f"no partitions under {settings.offline_dir / name}"
    return (
        pd.concat([pd.read_parquet(f) for f in files]).sort_values("item_id").reset_index(drop=True)
    )


@functools.cache
def onnx_cache() -> Path:
    """One export folder per test session (exports take seconds; the graphs are reused)."""
    return Path(tempfile.mkdtemp(prefix="mmrec-test-onnx-"))


@functools.cache
def text_encoder(backend: str = "torch"):
    from content.text_encoder import TextEncoder

    return TextEncoder(backend, threads=2, cache_dir=onnx_cache())


@functools.cache
def image_encoder(backend: str = "onnxruntime"):
    from content.image_encoder import ImageEncoder

    return ImageEncoder(backend, threads=2, cache_dir=onnx_cache())


def encoders(image_backend: str | None = "onnxruntime"):
    """The session's encoders; `image_backend` None: text only (a catalog without images)."""
    from content.encoding import Encoders

    image = None if image_backend is None else image_encoder(image_backend)
    return Encoders(text=text_encoder("torch"), image=image)


def photo(name: str) -> Image.Image:
    """A real photograph shipped in scikit-image's wheel (coffee, chelsea, astronaut, rocket...)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
