"""The fused item embedding: text and visual features projected into one shared space.

Why learned, not random: a fixed random projection of [text; visual] would keep whichever
modality has the larger norm and spread the rest over noise directions. Instead two linear
maps (384 -> d, 1280 -> d) are summed and layer-normalised, and the map is trained jointly
with the tag heads (tag_heads.py), so the shared space is the one in which an item's
categories and quality are linearly readable. The output is L2-normalised so inner product
equals cosine in the recall index.

The visual input is standardised with the training items' mean and standard deviation first
(EfficientNet's pooled ReLU6 features are all positive with a large common component);
those statistics are buffers of the module and are saved with it.

Missing modalities: a catalog without images builds the projector over text alone
(`modalities=("text",)`, `visual` None); in a catalog with images, an item without one
(`has_visual` false) gets no visual term, so its fused embedding is a projection of its text.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmrec.vocab import CONTENT_MODALITIES, FUSED_DIM, TEXT_DIM, VISUAL_DIM


class FusionProjector(nn.Module):
    def __init__(
        self,
        text_dim: int = TEXT_DIM,
        visual_dim: int = VISUAL_DIM,
        dim: int = FUSED_DIM,
        dropout: float = 0.1,
        modalities: tuple[str, ...] = CONTENT_MODALITIES,
    ) -> None:
        super().__init__()
        unknown = set(modalities) - set(CONTENT_MODALITIES)
        if unknown or not modalities:
            raise ValueError(
                f"modalities {modalities!r}: use a non-empty subset of {CONTENT_MODALITIES}"
            )
        # Ablations (text only, visual only) drop a modality's term from the sum.
        self.modalities = tuple(m for m in CONTENT_MODALITIES if m in modalities)
        self.register_buffer("visual_mean", torch.zeros(visual_dim))
        self.register_buffer("visual_std", torch.ones(visual_dim))
        self.text_proj = nn.Linear(text_dim, dim)
        self.visual_proj = nn.Linear(visual_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dim = dim

    def fit_visual_stats(self, visual: np.ndarray | None, has_visual: np.ndarray | None) -> None:
        """Standardise the visual input with the statistics of these (training) items' images
        (`has_visual`: which rows have one; None: all). No image: the identity."""
        if visual is None:
            return
        if has_visual is not None:
            visual = visual[has_visual]
        if len(visual):
            self.visual_mean.copy_(torch.as_tensor(visual.mean(axis=0), dtype=torch.float32))
            self.visual_std.copy_(torch.as_tensor(visual.std(axis=0) + 1e-4, dtype=torch.float32))

    def hidden(
        self,
        text: torch.Tensor,
        visual: torch.Tensor | None,
        has_visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The shared representation the heads read (before L2 normalisation). `visual` may be
        None when the projector has no visual modality; rows where `has_visual` (B,) bool is
        false get no visual term."""
        total = 0.0
        if "text" in self.modalities:
            total = total + self.text_proj(self.dropout(text))
        if "visual" in self.modalities:
            if visual is None:
                raise ValueError("this projector fuses a visual modality: pass visual features")
            visual = (visual - self.visual_mean) / self.visual_std
            term = self.visual_proj(self.dropout(visual))
            if has_visual is not None and not bool(has_visual.all()):
                term = term * has_visual.unsqueeze(-1).to(term.dtype)
            total = total + term
        return self.norm(total)

    def forward(
        self,
        text: torch.Tensor,
        visual: torch.Tensor | None,
        has_visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, dim) L2-normalised fused embeddings."""
        return nn.functional.normalize(self.hidden(text, visual, has_visual), dim=-1)
