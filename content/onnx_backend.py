"""ONNX Runtime execution of an encoder's PyTorch module, exported once and cached on disk.

The bench (bench/content_encoders_bench.py) measured ONNX Runtime against PyTorch eager on
2 CPU threads; an encoder uses it only where it was faster and its embeddings agreed with
PyTorch's (cosine >= 0.99). The exported file is keyed by the encoder's version, so a cached
graph never serves another model's weights.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "mmrec-onnx-cache"


def available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_name: str,
    dynamic_axes: dict[str, dict[int, str]],
) -> Path:
    """Export `module` to `path` (atomically) with the TorchScript-based exporter."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                example,
                str(tmp),
                input_names=list(input_names),
                output_names=[output_name],
                dynamic_axes={**dynamic_axes, output_name: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s", path)
    return path


class OrtModule:
    """A callable over an exported graph: numpy inputs in, one float32 array out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = dict(zip(self.input_names, arrays, strict=True))
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


def cache_dir() -> Path:
    """Where exported graphs live when the caller names no folder (the encode stage keeps
    them in the workspace's artifacts): a folder under the temp dir."""
    return DEFAULT_CACHE
