"""The content stage: raw items + media -> embeddings and tags, as Feast offline sources.

It adapts to what the data carries, as the manifest's profile declares it
(mmrec.world_manifest.data_profile): a catalog without images loads no image encoder, encodes
every titled item from its title and writes a null `visual_emb`; a catalog without video
frames encodes videos from their cover; the tag heads predict the manifest's `categories`,
and quality only where the data has quality labels (else `quality_label` and `quality_score`
are null: unknown).

1. Encode (the expensive part, resumable). Items not yet encoded under the current encoder
   version are read with their media, checked (inputs.prepare: bad items are skipped with a
   logged reason and counted, the batch goes on), and encoded in batches. Each batch lands as
   one Parquet part, written atomically, under
   `artifacts/content/encoded/<encoder_version>/`; a rerun reads the parts and encodes only
   the rest. The encoder version is a digest of the text and image encoders (wheels,
   preprocessing, backend; "none" without images) and the video sampling/pooling ("cover"
   without frames), so parts of different versions live in different folders and are never
   read together.
2. Tag heads + fusion (seconds): trained on the encoded items' labels with a held-out split
   (tag_heads.py), or reloaded when the same items, labels and encoders were trained on before.
3. Publish: `offline/item_embeddings/day=YYYY-MM-DD/part.parquet` and the same for
   `item_tags`, one partition per publish day, each row stamped with the item's publish time
   (so a point-in-time join sees the item's content from the moment it exists) and with the
   encoder name and version. Both sources are written to a staging folder and swapped in
   whole, so a reader sees one version or the other, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from content import image_encoder, inputs, tag_heads, text_encoder, video
from mmrec.errors import UserError
from mmrec.io import building_folder, progress, write_json, write_parquet
from mmrec.settings import Settings
from mmrec.vocab import TEXT_DIM, VISUAL_DIM
from mmrec.world_manifest import DataProfile, data_profile

log = logging.getLogger(__name__)

ITEM_EMBEDDINGS = "item_embeddings"
ITEM_TAGS = "item_tags"
NO_ENCODER = "none"  # the image/video entry of a spec when the catalog has no images
PART_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("content_hash", pa.string()),  # inputs.content_hash: what the row was computed from
        ("status", pa.string()),  # "ok" | "skipped"
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text_emb", pa.list_(pa.float32())),
        ("visual_emb", pa.list_(pa.float32())),
    ]
)


class EncodeError(UserError):
    """The stage cannot produce its outputs from these inputs; the message says why."""


@dataclass(frozen=True)
class EncodeConfig:
    batch_size: int = 64
    limit: int | None = None  # only the first N items of the catalog (by item_id)
    threads: int | None = None  # None: Settings.torch_threads
    text_backend: str = "torch"
    image_backend: str = "onnxruntime"
    max_frames: int = video.MAX_FRAMES
    pooling: str = "mean"
    heads: tag_heads.HeadConfig = field(default_factory=tag_heads.HeadConfig)
    ablations: bool = True  # also train text-only and visual-only heads, for the report
    retrain: bool = False
    show_progress: bool = True


@dataclass
class Encoders:
    """The loaded text and image encoders (tests and the bench pass their own); no image
    encoder for a catalog without images."""

    text: text_encoder.TextEncoder
    image: image_encoder.ImageEncoder | None

    @classmethod
    def load(
        cls, config: EncodeConfig, threads: int, cache_dir: Path | None = None, image: bool = True
    ) -> Encoders:
        return cls(
            text=text_encoder.TextEncoder(
                config.text_backend, threads=threads, cache_dir=cache_dir
            ),
            image=image_encoder.ImageEncoder(
                config.image_backend, threads=threads, cache_dir=cache_dir
            )
            if image
            else None,
        )


@dataclass
class EncodeReport:
    encoder_name: str
    encoder_version: str
    encoder_spec: dict[str, str]
    tag_model_version: str
    n_items: int
    n_encoded_now: int
    n_reused: int
    n_ok: int
    n_skipped: int
    skipped_by_reason: dict[str, int]
    seconds: float  # the whole run
    encode_s: float  # the encoding loop alone (decode, preprocess, models, parts)
    items_per_s: float  # items checked and encoded (or skipped) per second of the loop
    outputs: dict[str, str]
    tag_metrics: dict[str, Any]
    # labels' category tags outside the manifest's categories, ignored: tag -> count
    ignored_category_tags: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- versions ------------------------------------------------------------------------------


def encoder_spec(
    config: EncodeConfig, encoders: Encoders | None = None, profile: DataProfile | None = None
) -> dict[str, str]:
    """Everything that determines an item's text and visual embeddings: the encoders that run
    for this data (`profile`, default the synthetic world's), so a catalog without images or
    frames has its own spec."""
    profile = profile or DataProfile()
    if encoders is not None:
        text = encoders.text.version
    else:
        text = text_encoder.describe(config.text_backend)
    if not profile.image:
        return {"text": text, "image": NO_ENCODER, "video": NO_ENCODER}
    if encoders is not None:
        if encoders.image is None:
            raise EncodeError("the catalog has images but no image encoder was given")
        image = encoders.image.version
    else:
        image = image_encoder.describe(image_encoder.resolve_backend(config.image_backend))
    clips = video.version(config.max_frames, config.pooling) if profile.frames else "cover"
    return {"text": text, "image": image, "video": clips}


def encoder_name(profile: DataProfile) -> str:
    """The encoders that ran: text + image model, `+none` without images."""
    image = image_encoder.MODEL_NAME if profile.image else NO_ENCODER
    return f"{text_encoder.MODEL_NAME}+{image}"


ENCODER_NAME = encoder_name(DataProfile())  # the synthetic world's: text + image


def spec_version(spec: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


# ---- the encode cache: one Parquet part per batch --------------------------------------------


def cache_dir(settings: Settings, version: str) -> Path:
    return settings.artifacts_dir / "content" / "encoded" / version


def read_parts(folder: Path) -> pd.DataFrame:
    """The records of every part in this version's folder: item_id, status, reason, detail
    (an empty frame when none). The embeddings are read by `load_encoded`."""
    return _read_part_table(folder, with_embeddings=False).to_pandas()


def _read_part_table(folder: Path, with_embeddings: bool) -> pa.Table:
    columns = (
        PART_SCHEMA.names
        if with_embeddings
        else ["item_id", "content_hash", "status", "reason", "detail"]
    )
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return PART_SCHEMA.empty_table().select(columns)
    table = pa.concat_tables([pq.read_table(p, columns=columns, schema=PART_SCHEMA) for p in parts])
    # An item re-encoded because its inputs changed appears again in a later part: the
    # latest record (parts are numbered in write order) stands.
    ids = table.column("item_id").to_numpy()
    _, last_reversed = np.unique(ids[::-1], return_index=True)
    return table.take(pa.array(np.sort(len(ids) - 1 - last_reversed)))


@dataclass
class Encoded:
    """The encoded items of one version, sorted by id: ids (N,) int64, text (N, 384), visual
    (N, 1280) with zero rows where has_visual (N,) is false, or None when no item has an image;
    and the records of the skipped items."""

    ids: np.ndarray
    text: np.ndarray
    visual: np.ndarray | None
    has_visual: np.ndarray
    skipped: pd.DataFrame


def load_encoded(folder: Path, current: dict[int, str]) -> Encoded:
    """The items of `current` (item id -> content hash) encoded in this folder from that very
    content. Embeddings go straight from Arrow buffers to numpy (no per-row Python objects:
    bench scale is 100k+ items)."""
    table = _read_part_table(folder, with_embeddings=True)
    ids = table.column("item_id").to_numpy()
    hashes = table.column("content_hash").to_numpy(zero_copy_only=False)
    fresh = np.array([current.get(int(i)) == h for i, h in zip(ids, hashes, strict=True)], bool)
    table = table.filter(pa.array(fresh))
    status = table.column("status").to_numpy(zero_copy_only=False)
    skipped = (
        table.filter(pa.array(status == "skipped")).drop(["text_emb", "visual_emb"]).to_pandas()
    )
    ok = table.filter(pa.array(status == "ok"))
    ok = ok.take(pa.array(np.argsort(ok.column("item_id").to_numpy(), kind="stable")))

    def matrix(name: str, dim: int, valid: np.ndarray) -> np.ndarray:
        values = ok.column(name).combine_chunks().flatten().to_numpy()  # null rows: no values
        out = np.zeros((len(ok), dim), dtype=np.float32)  # a writable copy
        out[valid] = np.asarray(values, dtype=np.float32).reshape(int(valid.sum()), dim)
        return out

    has_visual = ok.column("visual_emb").is_valid().to_numpy(zero_copy_only=False)
    return Encoded(
        ids=ok.column("item_id").to_numpy().astype(np.int64),
        text=matrix("text_emb", TEXT_DIM, np.ones(len(ok), bool)),
        visual=matrix("visual_emb", VISUAL_DIM, has_visual) if has_visual.any() else None,
        has_visual=has_visual,
        skipped=skipped,
    )


def _list_array(matrix: np.ndarray | None, valid: np.ndarray) -> pa.Array:
    """list<float32> with one row per matrix row; null where not valid (all: matrix None)."""
    if matrix is None:
        return pa.nulls(len(valid), pa.list_(pa.float32()))
    n, dim = matrix.shape
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.where(valid, dim, 0))
    values = pa.array(matrix[valid].astype(np.float32).ravel(), type=pa.float32())
    mask = pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def write_part(
    folder: Path,
    seq: int,
    ok_ids: list[int],
    text: np.ndarray,
    visual: np.ndarray,
    skipped: list[inputs.Skipped],
    hashes: dict[int, str],
    has_visual: np.ndarray | None = None,
) -> Path:
    """One part: the encoded items (visual_emb null where `has_visual` is false; None: all
    have one) and the skipped ones."""
    n_ok, n_skip = len(ok_ids), len(skipped)
    valid = np.r_[np.ones(n_ok, bool), np.zeros(n_skip, bool)]
    has = np.ones(n_ok, bool) if has_visual is None else np.asarray(has_visual, bool)
    visual_valid = np.r_[has, np.zeros(n_skip, bool)]
    text_all = np.vstack([text.reshape(n_ok, TEXT_DIM), np.zeros((n_skip, TEXT_DIM), np.float32)])
    visual_all = np.vstack(
        [visual.reshape(n_ok, VISUAL_DIM), np.zeros((n_skip, VISUAL_DIM), np.float32)]
    )
    table = pa.table(
        {
            "item_id": pa.array([*ok_ids, *(s.item_id for s in skipped)], pa.int64()),
            "content_hash": pa.array(
                [hashes[i] for i in ok_ids] + [hashes[s.item_id] for s in skipped], pa.string()
            ),
            "status": pa.array(["ok"] * n_ok + ["skipped"] * n_skip, pa.string()),
            "reason": pa.array([None] * n_ok + [s.reason for s in skipped], pa.string()),
            "detail": pa.array([None] * n_ok + [s.detail[:500] for s in skipped], pa.string()),
            "text_emb": _list_array(text_all, valid),
            "visual_emb": _list_array(visual_all, visual_valid),
        },
        schema=PART_SCHEMA,
    )
    return write_parquet(table, folder / f"part-{seq:06d}.parquet")


# ---- encoding one batch ----------------------------------------------------------------------


def encode_batch(
    encoders: Encoders, prepared: list[inputs.Prepared], config: EncodeConfig
) -> tuple[list[int], np.ndarray, np.ndarray, list[inputs.Skipped]]:
    """Text and visual embeddings of prepared items (visual rows of items without images,
    `Prepared.has_visual` false, are zeros); an item the models choke on is skipped."""
    try:
        text, visual = _encode(encoders, prepared, config)
        return [p.item_id for p in prepared], text, visual, []
    except Exception as err:  # a model error on one item must not sink the batch: isolate it
        log.warning("batch of %d failed (%s); encoding its items one by one", len(prepared), err)
    ids, texts, visuals, skipped = [], [], [], []
    for p in prepared:
        try:
            t, v = _encode(encoders, [p], config)
        except Exception as err:
            skipped.append(
                inputs.Skipped(p.item_id, inputs.ENCODE_ERROR, f"{type(err).__name__}: {err}")
            )
            continue
        ids.append(p.item_id)
        texts.append(t)
        visuals.append(v)
    text = np.vstack(texts) if texts else np.zeros((0, TEXT_DIM), np.float32)
    visual = np.vstack(visuals) if visuals else np.zeros((0, VISUAL_DIM), np.float32)
    return ids, text, visual, skipped


def _encode(
    encoders: Encoders, prepared: list[inputs.Prepared], config: EncodeConfig
) -> tuple[np.ndarray, np.ndarray]:
    text = encoders.text.encode([p.title for p in prepared], batch_size=max(len(prepared), 1))
    visual = np.zeros((len(prepared), VISUAL_DIM), dtype=np.float32)
    stills = [i for i, p in enumerate(prepared) if p.has_visual and not p.is_video]
    clips = [i for i, p in enumerate(prepared) if p.has_visual and p.is_video]
    if (stills or clips) and encoders.image is None:
        raise EncodeError("items with images need an image encoder")
    if stills:
        visual[stills] = encoders.image.encode([prepared[i].images[0] for i in stills])
    if clips:
        visual[clips] = video.encode_videos(
            encoders.image, [prepared[i].images for i in clips], config.max_frames, config.pooling
        )
    return text, visual


def _batches(
    settings: Settings,
    items: pd.DataFrame,
    pending: set[int],
    batch_size: int,
    profile: DataProfile,
) -> Iterator[tuple[list[inputs.Prepared], list[inputs.Skipped]]]:
    """Checked items in batches of up to `batch_size` (skips ride along, uncounted in size)."""
    by_id = _records(items)
    prepared: list[inputs.Prepared] = []
    skipped: list[inputs.Skipped] = []
    for item_id, media in inputs.media_by_item(settings.raw_dir, pending, profile.image):
        result = inputs.prepare(by_id[item_id], media, profile.image, profile.frames)
        (skipped if isinstance(result, inputs.Skipped) else prepared).append(result)
        if len(prepared) >= batch_size:
            yield prepared, skipped
            prepared, skipped = [], []
    if prepared or skipped:
        yield prepared, skipped


def current_hashes(
    settings: Settings, items: pd.DataFrame, profile: DataProfile | None = None
) -> dict[int, str]:
    """item id -> inputs.content_hash of its current title, material and (in a catalog with
    images) media."""
    by_id = _records(items)
    image = (profile or DataProfile()).image
    return {
        item_id: inputs.content_hash(by_id[item_id], media)
        for item_id, media in inputs.media_by_item(settings.raw_dir, set(by_id), image)
    }


def _records(items: pd.DataFrame) -> dict[int, dict[str, object]]:
    return {int(r["item_id"]): r for r in items.to_dict("records")}


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    # Raises once set, or once parallel work has started in this process: keep what is there.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


# ---- the stage -------------------------------------------------------------------------------


def run_encode(
    settings: Settings,
    config: EncodeConfig | None = None,
    encoders: Encoders | None = None,
    profile: DataProfile | None = None,
) -> EncodeReport:
    """Encode what is not encoded yet, (re)train the heads if needed, publish both sources.
    `profile`: what the data carries; default the manifest's (data_profile)."""
    config = config or EncodeConfig()
    if config.batch_size < 1:
        raise EncodeError(f"batch size must be >= 1, got {config.batch_size}")
    started = time.perf_counter()
    threads = config.threads or settings.torch_threads
    set_threads(threads)

    items = inputs.read_items(settings.raw_dir)
    if config.limit is not None:
        items = items.head(config.limit)
    profile = profile or data_profile(settings)
    name = encoder_name(profile)
    spec = encoder_spec(config, encoders, profile)
    version = spec_version(spec)
    folder = cache_dir(settings, version)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        {"encoder_name": name, "encoder_version": version, "spec": spec}, folder / "spec.json"
    )

    current = current_hashes(settings, items, profile)
    done = read_parts(folder)
    cached = dict(zip(done.item_id.tolist(), done.content_hash.tolist(), strict=True))
    pending = {i for i, h in current.items() if cached.get(i) != h}
    n_stale = sum(1 for i in pending if i in cached)
    n_reused = len(current) - len(pending)
    log.info(
        "encoder %s: %d items, %d already encoded, %d to encode (%d changed since)",
        version,
        len(current),
        n_reused,
        len(pending),
        n_stale,
    )

    n_encoded_now = 0
    encode_s = 0.0
    if pending:
        encoders = encoders or Encoders.load(
            config, threads, settings.artifacts_dir / "content" / "onnx", image=profile.image
        )
        loaded = encoder_spec(config, encoders, profile)
        if loaded != spec:
            raise EncodeError(
                f"the loaded encoders ({loaded}) differ from the configured ones ({spec})"
            )
        encode_started = time.perf_counter()
        seq = 1 + max(
            (int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")), default=-1
        )
        n_batches = -(-len(pending) // config.batch_size)
        batches = _batches(settings, items, pending, config.batch_size, profile)
        if config.show_progress:
            batches = progress(batches, "encode items", total=n_batches)
        for prepared, skipped in batches:
            if prepared:
                ids, text, visual, failed = encode_batch(encoders, prepared, config)
            else:
                ids, text, visual, failed = (
                    [],
                    np.zeros((0, TEXT_DIM)),
                    np.zeros((0, VISUAL_DIM)),
                    [],
                )
            skipped = skipped + failed
            for s in skipped:
                log.warning("skip item %d: %s (%s)", s.item_id, s.reason, s.detail)
            has_visual = {p.item_id: p.has_visual for p in prepared}
            visual_rows = np.array([has_visual[i] for i in ids], bool)
            write_part(folder, seq, ids, text, visual, skipped, current, visual_rows)
            seq += 1
            n_encoded_now += len(ids)
        encode_s = time.perf_counter() - encode_started

    encoded = load_encoded(folder, current)
    by_reason = {r: int(c) for r, c in encoded.skipped.reason.value_counts().sort_index().items()}
    if len(encoded.ids) == 0:
        raise EncodeError(f"no item could be encoded (skipped: {by_reason})")

    trained, ignored = _heads(settings, config, profile, version, encoded, items)
    preds = tag_heads.predict(
        trained.model, encoded.text, encoded.visual, has_visual=encoded.has_visual
    )
    outputs = publish(settings, items, encoded, preds, version, name, spec, trained.version)

    seconds = time.perf_counter() - started
    report = EncodeReport(
        encoder_name=name,
        encoder_version=version,
        encoder_spec=spec,
        tag_model_version=trained.version,
        n_items=len(current),
        n_encoded_now=n_encoded_now,
        n_reused=n_reused,
        n_ok=len(encoded.ids),
        n_skipped=len(encoded.skipped),
        skipped_by_reason=by_reason,
        seconds=round(seconds, 3),
        encode_s=round(encode_s, 3),
        items_per_s=round(len(pending) / encode_s, 2) if encode_s else 0.0,
        outputs={k: str(v) for k, v in outputs.items()},
        tag_metrics=trained.metrics,
        ignored_category_tags=ignored,
    )
    write_json(report.to_dict(), settings.artifacts_dir / "content" / "encode_report.json")
    log.info(
        "encoded %d new, reused %d, skipped %d %s; tags v%s",
        n_encoded_now,
        n_reused,
        report.n_skipped,
        by_reason,
        trained.version,
    )
    return report


def _heads(
    settings: Settings,
    config: EncodeConfig,
    profile: DataProfile,
    version: str,
    encoded: Encoded,
    items: pd.DataFrame,
) -> tuple[tag_heads.TrainedHeads, dict[str, int]]:
    """Train (or reload) the tag heads on the encoded items that have labels, over the
    profile's categories and modalities; also the labels' tags outside those categories."""
    labels = inputs.read_labels(settings.raw_dir)
    if labels is None:
        raise EncodeError(
            f"{settings.raw_dir / inputs.LABELS} not found: the tag heads need labels"
        )
    frame = (
        pd.DataFrame({"item_id": encoded.ids, "row": np.arange(len(encoded.ids))})
        .merge(labels, on="item_id")
        .merge(items[["item_id", "category"]], on="item_id")
    )
    if len(frame) < 2:
        raise EncodeError(
            f"only {len(frame)} encoded items have labels; the tag heads need 2 or more"
        )
    rows = frame.row.to_numpy()
    quality = frame.quality_label if "quality_label" in frame else pd.Series([None] * len(frame))
    targets = tag_heads.encode_labels(
        [[] if t is None else list(t) for t in frame.category_tags],
        quality.tolist(),
        frame.category.tolist(),
        profile.categories,
    )
    if targets.unknown_tags:
        log.warning(
            "%d category tags outside the manifest's %d categories ignored: %s",
            sum(targets.unknown_tags.values()),
            len(profile.categories),
            dict(list(targets.unknown_tags.items())[:10]),
        )
    if not targets.category.any():
        raise EncodeError(
            f"no item's category_tags in {settings.raw_dir / inputs.LABELS} is one of the "
            f"manifest's categories {list(profile.categories)[:5]}...: fix `categories` in "
            f"{settings.raw_dir / 'manifest.json'} or the labels"
        )
    head_config = _head_config(config.heads, profile, has_images=encoded.visual is not None)
    label_ids = frame.item_id.to_numpy(np.int64)
    hv = tag_heads.heads_version(version, head_config, label_ids, targets)
    path = settings.artifacts_dir / "content" / "heads" / f"{hv}.pt"
    if path.exists() and not config.retrain:
        try:
            trained = tag_heads.load(path, profile.categories)
            log.info("tag heads %s: reusing %s", hv, path)
            return trained, targets.unknown_tags
        except tag_heads.VocabularyMismatch as err:
            log.warning("tag heads %s: retraining (%s)", hv, err)
    has_visual = encoded.has_visual[rows]
    trained = tag_heads.fit_and_evaluate(
        encoded.text[rows],
        None if encoded.visual is None else encoded.visual[rows],
        targets,
        label_ids,
        version,
        head_config,
        ablations=config.ablations,
        has_visual=None if has_visual.all() else has_visual,
    )
    tag_heads.save(trained, path)
    write_json(
        {"tag_model_version": trained.version, "encoder_version": version, **trained.metrics},
        settings.artifacts_dir / "content" / "tag_heads_metrics.json",
    )
    _log_metrics(trained.metrics)
    return trained, targets.unknown_tags


def _head_config(
    heads: tag_heads.HeadConfig, profile: DataProfile, has_images: bool
) -> tag_heads.HeadConfig:
    """The configured heads over the modalities the catalog carries (no visual one when no
    encoded item has an image)."""
    carried = tuple(m for m in profile.content_modalities if m != "visual" or has_images)
    modalities = tuple(m for m in heads.modalities if m in carried)
    if not modalities:
        raise EncodeError(
            f"the tag heads fuse {heads.modalities} but the encoded items carry only "
            f"{carried}: include one of those in HeadConfig.modalities"
        )
    return replace(heads, modalities=modalities)


def _log_metrics(m: dict[str, Any]) -> None:
    log.info(
        "held-out (%d items): category micro-F1 %.3f (most-frequent-tag baseline %.3f), "
        "primary acc %.3f (baseline %.3f); %s",
        m["n_test"],
        m["category"]["micro_f1"],
        m["category_baseline_most_frequent_tag"]["micro_f1"],
        m["category"]["primary_accuracy"],
        m["category_baseline_most_frequent_tag"]["primary_accuracy"],
        quality_summary(m, macro=True),
    )


def quality_summary(m: dict[str, Any], macro: bool = False) -> str:
    """The quality head's held-out figures in one phrase, or why there are none."""
    q, base = m.get("quality"), m.get("quality_baseline_majority")
    if q is None or base is None:
        return f"no quality head (fewer than {tag_heads.MIN_QUALITY_LABELS} quality labels)"
    if macro:
        return (
            f"quality acc {q['accuracy']:.3f} macro-F1 {q['macro_f1']:.3f} "
            f"(majority {base['accuracy']:.3f} / {base['macro_f1']:.3f})"
        )
    return f"quality accuracy {q['accuracy']:.3f} (majority baseline {base['accuracy']:.3f})"


# ---- publishing the offline sources ------------------------------------------------------------


def publish(
    settings: Settings,
    items: pd.DataFrame,
    encoded: Encoded,
    preds: tag_heads.Predictions,
    version: str,
    name: str,
    spec: dict[str, str],
    tag_version: str,
) -> dict[str, Path]:
    """Write both sources (visual_emb null for items without an image; quality_label and
    quality_score null when the heads have no quality head) and swap them in."""
    ids = encoded.ids
    publish_ts = items.set_index("item_id").publish_ts.reindex(ids)
    if publish_ts.isna().any():
        raise RuntimeError("encoded items missing from the catalog")
    event_ts = pa.array(
        pd.DatetimeIndex(publish_ts).tz_convert("UTC"), pa.timestamp("us", tz="UTC")
    )
    n = len(ids)
    created = pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC"))
    common = {
        "item_id": pa.array(ids, pa.int64()),
        "event_timestamp": event_ts,
        "created_ts": created,
        "encoder_name": pa.array([name] * n, pa.string()),
        "encoder_version": pa.array([version] * n, pa.string()),
    }
    every = np.ones(n, bool)
    visual_encoder = (
        NO_ENCODER if spec["image"] == NO_ENCODER else f"{spec['image']};{spec['video']}"
    )
    embeddings = pa.table(
        {
            **common,
            "text_encoder": pa.array([spec["text"]] * n, pa.string()),
            "visual_encoder": pa.array([visual_encoder] * n, pa.string()),
            "fusion_version": pa.array([tag_version] * n, pa.string()),
            "text_emb": _list_array(encoded.text, every),
            "visual_emb": _list_array(encoded.visual, encoded.has_visual),
            "fused_emb": _list_array(preds.fused, every),
        }
    )
    tags = pa.table(
        {
            **common,
            "tag_model_version": pa.array([tag_version] * n, pa.string()),
            "category_tags": pa.array(preds.category_tags(), pa.list_(pa.string())),
            "category_probs": _list_array(preds.category_probs, every),
            "quality_label": pa.array(preds.quality_labels(), pa.string()),
            "quality_score": pa.nulls(n, pa.float32())
            if preds.quality_score is None
            else pa.array(preds.quality_score, pa.float32()),
        }
    )
    days = pd.DatetimeIndex(publish_ts).strftime("%Y-%m-%d").to_numpy()
    return {
        ITEM_EMBEDDINGS: _swap_in(settings.offline_dir, ITEM_EMBEDDINGS, embeddings, days),
        ITEM_TAGS: _swap_in(settings.offline_dir, ITEM_TAGS, tags, days),
    }


def _swap_in(offline_dir: Path, source: str, table: pa.Table, days: np.ndarray) -> Path:
    """Write `day=.../part.parquet` partitions beside the source's folder, then swap them in
    whole (mmrec.io.building_folder)."""
    final = offline_dir / source
    with building_folder(final) as staging:
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            write_parquet(part, staging / f"day={day}" / "part.parquet")
    return final
