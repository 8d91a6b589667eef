"""Running the content encoders: which encoders run for the data (their spec and version),
loading them, and encoding one batch of checked items with a failing item isolated.

The encoder version is a digest of the text and image encoders (wheels, preprocessing,
backend; "none" without images) and the video sampling/pooling ("cover" without frames):
embeddings of different versions never meet (content/encode_cache.py keeps them apart).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from content import image_encoder, inputs, tag_heads, text_encoder, video
from mmrec.errors import UserError
from mmrec.vocab import TEXT_DIM, VISUAL_DIM
from mmrec.world_manifest import DataProfile

log = logging.getLogger(__name__)

NO_ENCODER = "none"  # the image/video entry of a spec when the catalog has no images


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


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    # Raises once set, or once parallel work has started in this process: keep what is there.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


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
