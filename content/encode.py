"""The content stage: raw items + media -> embeddings and tags, as Feast offline sources.

It adapts to what the data carries, as the manifest's profile declares it
(mmrec.world_manifest.data_profile): a catalog without images loads no image encoder, encodes
every titled item from its title and writes a null `visual_emb`; a catalog without video
frames encodes videos from their cover; the tag heads predict the manifest's `categories`,
and quality only where the data has quality labels (else `quality_label` and `quality_score`
are null: unknown).

1. Encode (the expensive part, resumable). Items not yet encoded under the current encoder
   version (content/encoding.py) are read with their media, checked (inputs.prepare: bad
   items are skipped with a logged reason and counted, the batch goes on), and encoded in
   batches; each batch lands as one part of the encode cache (content/encode_cache.py), so a
   rerun encodes only the rest, and parts of different versions are never read together.
2. Tag heads + fusion (seconds): trained on the encoded items' labels with a held-out split
   (tag_heads.py), or reloaded when the same items, labels and encoders were trained on before.
3. Publish (content/publish.py): the `item_embeddings` and `item_tags` offline sources, one
   partition per publish month, each swapped in whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from content import inputs, tag_heads
from content.encode_cache import Encoded, cache_dir, load_encoded, read_parts, write_part
from content.encoding import (
    EncodeConfig,
    EncodeError,
    Encoders,
    encode_batch,
    encoder_name,
    encoder_spec,
    set_threads,
    spec_version,
)
from content.publish import publish
from mmrec.io import progress, write_json
from mmrec.settings import Settings
from mmrec.vocab import TEXT_DIM, VISUAL_DIM
from mmrec.world_manifest import DataProfile, data_profile

log = logging.getLogger(__name__)


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
