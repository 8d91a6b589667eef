"""Real pixels for every item: a cover image, and frames for videos.

The picture is a striped texture whose hue and stripe angle/frequency encode the category
and whose contrast, sharpness and noise encode quality, so a pretrained CNN's features can
recover both. Pixels are rendered with numpy in batches and encoded as PNG by Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mmrec.vocab import N_CATEGORIES

# One hue per category, spread around the colour wheel, as RGB in [0, 1].
_HUES = np.linspace(0.0, 1.0, N_CATEGORIES, endpoint=False)
CATEGORY_RGB = np.stack(
    [np.clip(np.abs(((_HUES * 6 + k) % 6) - 3) - 1, 0, 1) for k in (0, 4, 2)], axis=1
).astype(np.float32)


def render_pixels(
    category: np.ndarray,
    quality: np.ndarray,
    phase: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Images as uint8 (B, size, size, 3) for items of the given categories and qualities.

    `phase` (B,) shifts the stripes: frames of one video differ by phase only.
    """
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")  # (size, size)
    # float32 throughout: this renders hundreds of thousands of images at bench scale
    angle = (category * np.pi / N_CATEGORIES).astype(np.float32)[:, None, None]  # (B, 1, 1)
    freq = (3 + category % 4 * 2).astype(np.float32)[:, None, None]
    stripes = np.sin(
        2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle))
        + phase.astype(np.float32)[:, None, None]
    )
    quality = quality.astype(np.float32)
    contrast = (0.25 + 0.6 * quality)[:, None, None, None]
    base = CATEGORY_RGB[category][:, None, None, :]  # (B, 1, 1, 3)
    img = base * (0.55 + contrast * stripes[..., None] * 0.5) + 0.2 * (1 - base) * 0.5
    blurry = quality < 0.4
    if blurry.any():
        # A 5x5 box blur for low-quality items (numpy rolls: no SciPy dependency for one filter).
        soft = img[blurry]
        soft = sum(np.roll(soft, s, axis=1) for s in range(-2, 3)) / 5
        img[blurry] = sum(np.roll(soft, s, axis=2) for s in range(-2, 3)) / 5
    noise = (
        rng.standard_normal(img.shape, dtype=np.float32)
        * (0.25 * (1 - quality))[:, None, None, None]
    )
    return (np.clip(img + noise, 0, 1) * 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of one (H, W, 3) uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_media(
    category: np.ndarray,
    quality: np.ndarray,
    is_video: np.ndarray,
    n_frames: int,
    size: int,
    rng: np.random.Generator,
) -> tuple[list[bytes], list[list[bytes]]]:
    """Cover PNGs for a batch of items and `n_frames` frame PNGs for each video."""
    covers = render_pixels(category, quality, np.zeros(len(category)), size, rng)
    cover_png = [encode_png(img) for img in covers]
    frame_png: list[list[bytes]] = [[] for _ in range(len(category))]
    video_idx = np.flatnonzero(is_video)
    if len(video_idx):
        cats = np.repeat(category[video_idx], n_frames)
        quals = np.repeat(quality[video_idx], n_frames)
        phases = np.tile(np.linspace(0.5, 2.5, n_frames), len(video_idx))
        frames = render_pixels(cats, quals, phases, size, rng).reshape(
            len(video_idx), n_frames, size, size, 3
        )  # (V, F, H, W, 3)
        for row, item_frames in zip(video_idx, frames, strict=True):
            frame_png[row] = [encode_png(img) for img in item_frames]
    return cover_png, frame_png
