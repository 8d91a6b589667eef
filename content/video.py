"""Video: sample frames, encode them with the image encoder, pool to one 1280-d vector.

Sampling is segment-centred (TSN style): the clip is split into `k` equal segments and the
middle frame of each is taken, so a long clip and a short one are covered evenly and the
choice is deterministic. Pooling is the mean of frame features (order-free, so it does not
depend on the frame rate); `max` is available for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from mmrec.vocab import VISUAL_DIM

MAX_FRAMES = 8
POOLINGS = ("mean", "max")


def sample_frame_indices(n_frames: int, k: int = MAX_FRAMES) -> np.ndarray:
    """Indices of up to `k` frames spread evenly over `n_frames` (all of them when n <= k)."""
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_frames <= k:
        return np.arange(n_frames, dtype=np.int64)
    return np.floor((np.arange(k) + 0.5) * n_frames / k).astype(np.int64)


def pool_frames(frame_features: np.ndarray, how: str = "mean") -> np.ndarray:
    """(F, D) frame features -> (D,)."""
    if how not in POOLINGS:
        raise ValueError(f"pooling {how!r}: use one of {', '.join(POOLINGS)}")
    if len(frame_features) == 0:
        raise ValueError("cannot pool a video without frames")
    pooled = frame_features.mean(axis=0) if how == "mean" else frame_features.max(axis=0)
    return pooled.astype(np.float32)


def encode_videos(
    encoder,
    videos: Sequence[Sequence[Image.Image]],
    max_frames: int = MAX_FRAMES,
    how: str = "mean",
) -> np.ndarray:
    """(len(videos), 1280): every video's sampled frames go through the encoder in one batch."""
    picks = [
        [frames[i] for i in sample_frame_indices(len(frames), max_frames)] for frames in videos
    ]
    if any(not p for p in picks):
        raise ValueError("a video has no frames; skip it before encoding")
    flat = [frame for p in picks for frame in p]
    features = encoder.encode(flat) if flat else np.zeros((0, VISUAL_DIM), np.float32)
    bounds = np.cumsum([0, *map(len, picks)])
    out = np.zeros((len(videos), VISUAL_DIM), dtype=np.float32)
    for i in range(len(videos)):
        out[i] = pool_frames(features[bounds[i] : bounds[i + 1]], how)
    return out


def version(max_frames: int = MAX_FRAMES, how: str = "mean") -> str:
    return f"segment-centre-{max_frames};{how}-pool"
