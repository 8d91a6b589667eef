"""`mmrec generate`: write a whole synthetic world, deterministic per (scale, seed).

Layout under the workspace's data/ folder:
  raw/users.parquet, raw/skus.parquet, raw/items.parquet, raw/item_labels.parquet,
  raw/item_media.parquet, raw/events/day=YYYY-MM-DD/events.parquet, raw/manifest.json
  truth/users_latent.parquet, truth/items_latent.parquet   (evaluation only)
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datagen.behaviour import simulate_day
from datagen.catalog import Catalog, get_modality_taste, make_catalog, quality_label
from datagen.media import render_media
from datagen.scales import Scale, get_scale
from mmrec.errors import UserError
from mmrec.io import progress, read_json, write_json, write_parquet
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES, MATERIALS, WORLD_EPOCH

log = logging.getLogger(__name__)
GENERATOR_VERSION = "1"
MEDIA_BATCH = 2_048
# Share of items given a real-world defect (empty title, unreadable cover, video with no
# frames) so that content understanding's bad-input path is exercised on every world.
DEFECT_RATE = 0.005


class WorldExistsError(UserError):
    """A different world (scale or seed) is already in the data folder."""


def day_label(day: int) -> str:
    return (WORLD_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def generate_world(
    settings: Settings,
    scale_name: str,
    seed: int,
    force: bool = False,
    modality_taste: str = "mixed",
) -> dict[str, Any]:
    """Generate (or regenerate identically) the world; returns the manifest.

    Refuses to overwrite a world of another scale, seed or modality taste unless `force`: a
    re-run with the same arguments is safe and yields byte-identical data, so nothing is lost
    either way.
    """
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    scale = get_scale(scale_name)
    taste = get_modality_taste(modality_taste)
    manifest_path = settings.raw_dir / "manifest.json"
    if manifest_path.exists():
        old = read_json(manifest_path)
        was = (old.get("scale"), old.get("seed"), old.get("modality_taste", "mixed"))
        if was != (scale.name, seed, modality_taste):
            if not force:
                raise WorldExistsError(
                    f"{settings.data_dir} holds a world with scale={was[0]} seed={was[1]} "
                    f"modality_taste={was[2]}; pass --force to replace it, or use another "
                    "workspace (MMREC_WORKSPACE)"
                )
            log.warning("replacing the world in %s", settings.data_dir)
            shutil.rmtree(settings.data_dir)

    catalog = make_catalog(scale, np.random.default_rng([seed, 0]), taste)
    defects = _inject_defects(catalog, np.random.default_rng([seed, 1]))
    _write_catalog(settings, catalog, np.random.default_rng([seed, 2]))
    _write_media(settings, catalog, scale, seed, defects)
    n_events = 0
    counts: dict[str, int] = {}
    for day in progress(range(scale.n_days), f"events ({scale.name})"):
        events = simulate_day(catalog, scale, day, np.random.default_rng([seed, 3, day]))
        write_parquet(events, settings.events_file(WORLD_EPOCH + timedelta(days=day)))
        n_events += len(events)
        for event_type, n in events.event_type.value_counts().items():
            counts[str(event_type)] = counts.get(str(event_type), 0) + int(n)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "scale": scale.name,
        "seed": seed,
        "modality_taste": modality_taste,
        "start": WORLD_EPOCH.isoformat(),
        "end": (WORLD_EPOCH + timedelta(days=scale.n_days)).isoformat(),
        "days": [day_label(d) for d in range(scale.n_days)],
        "n_users": len(catalog.users),
        "n_items": len(catalog.items),
        "n_skus": len(catalog.skus),
        "n_events": n_events,
        "events_by_type": dict(sorted(counts.items())),
        "defects": {k: len(v) for k, v in defects.items()},
        # the data profile (mmrec.world_manifest.DataProfile): what stages adapt to
        "source": "synthetic",
        "categories": list(CATEGORIES),
        "modalities": {"text": True, "image": True, "frames": True},
        "has_skus": True,
        "materials": list(MATERIALS),
    }
    write_json(manifest, manifest_path)
    return manifest


def _inject_defects(catalog: Catalog, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mark a few items with an empty title, an unreadable cover, or a video with no frames."""
    n = len(catalog.items)
    picks = rng.permutation(n)[: max(3, int(n * DEFECT_RATE * 3))]
    empty_title, bad_cover, no_frames = np.array_split(picks, 3)
    no_frames = no_frames[catalog.items.material.to_numpy()[no_frames] == "video"]
    catalog.items.loc[empty_title, "title"] = ""
    return {
        "empty_title": empty_title,
        "unreadable_cover": bad_cover,
        "video_without_frames": no_frames,
    }


def _write_catalog(settings: Settings, catalog: Catalog, rng: np.random.Generator) -> None:
    raw, truth = settings.raw_dir, settings.truth_dir
    write_parquet(catalog.users, raw / "users.parquet")
    write_parquet(catalog.skus.drop(columns="category_idx"), raw / "skus.parquet")
    write_parquet(catalog.items, raw / "items.parquet")
    write_parquet(_item_labels(catalog, rng), raw / "item_labels.parquet")
    write_parquet(catalog.user_latent, truth / "users_latent.parquet")
    write_parquet(catalog.item_latent, truth / "items_latent.parquet")


def _item_labels(catalog: Catalog, rng: np.random.Generator) -> pd.DataFrame:
    """Annotator labels: the categories of the linked SKUs (multi-label, primary first) and a
    quality grade with 10% label noise, as a human-labelled set would have."""
    sku_category = dict(zip(catalog.skus.sku_id, catalog.skus.category, strict=True))
    tags = [
        [primary, *sorted({sku_category[s] for s in skus} - {primary})]
        for primary, skus in zip(catalog.items.category, catalog.items.sku_ids, strict=True)
    ]
    grade = quality_label(catalog.item_latent.quality.to_numpy())
    noisy = rng.random(len(grade)) < 0.1
    grade[noisy] = rng.choice(["low", "medium", "high"], noisy.sum())
    return pd.DataFrame(
        {"item_id": catalog.items.item_id, "category_tags": tags, "quality_label": grade}
    )


def _write_media(
    settings: Settings, catalog: Catalog, scale: Scale, seed: int, defects: dict[str, np.ndarray]
) -> None:
    """Stream covers and frames to one Parquet file in row groups (bench scale is GBs)."""
    schema = pa.schema(
        [("item_id", pa.int64()), ("cover_png", pa.binary()), ("frame_pngs", pa.list_(pa.binary()))]
    )
    path = settings.raw_dir / "item_media.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    category = pd.Categorical(catalog.items.category, categories=CATEGORIES).codes.astype(np.int64)
    quality = catalog.item_latent.quality.to_numpy()
    is_video = (catalog.items.material == "video").to_numpy()
    bad_cover, no_frames = set(defects["unreadable_cover"]), set(defects["video_without_frames"])
    starts = range(0, len(catalog.items), MEDIA_BATCH)
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in progress(starts, "item media"):
            rows = np.arange(start, min(start + MEDIA_BATCH, len(catalog.items)))
            rng = np.random.default_rng([seed, 4, start])
            covers, frames = render_media(
                category[rows], quality[rows], is_video[rows], scale.n_frames, scale.image_size, rng
            )
            for i, row in enumerate(rows):
                if row in bad_cover:
                    covers[i] = covers[i][:40]  # truncated PNG: unreadable
                if row in no_frames:
                    frames[i] = []
            batch = pa.table(
                {
                    "item_id": catalog.items.item_id.to_numpy()[rows],
                    "cover_png": covers,
                    "frame_pngs": frames,
                },
                schema=schema,
            )
            writer.write_table(batch)
    tmp.replace(path)
