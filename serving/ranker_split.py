"""Serving's split of the ranker's first layers: the item side computed once per catalog.

Every MMoE first layer (each expert's first linear layer and each task's gate) is linear in
the model's input x, whose column blocks are "user", "item" or "pair"
(`RankingModel.input_layout`): x @ W = x_user @ W_user + x_item @ W_item + x_pair @ W_pair.
The "item" blocks depend on the candidate alone, so serving computes x_item @ W_item for the
whole catalog at each snapshot load (`item_first_layer`, serving/ranker.py) and per request
adds only the user and pair parts (`score_encoded`): the same scores as the full forward pass
(tests/test_models_ranking.py, every block switch). Only serving uses it, so it lives here,
not in the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.layers import inference
from models.ranking import RankingModel
from models.ranking_tensors import ItemEncoding, UserInputs


@dataclass(frozen=True)
class SplitFirstLayers:
    """The MMoE first layers' weights by input kind (`split_first_layers`): names {kind: block
    names in input order}, weights {kind: (width of those blocks, H)}, bias (H,); kinds as in
    `RankingModel.input_layout`."""

    names: dict[str, list[str]]
    weights: dict[str, Tensor]
    bias: Tensor


def split_first_layers(model: RankingModel) -> SplitFirstLayers:
    """The model's MMoE first layers' weights (experts, then gates) split by input kind."""
    layers = model.mmoe.first_layers()
    with torch.no_grad():
        weight = torch.cat([layer.weight for layer in layers])  # (H, D)
        names: dict[str, list[str]] = {"user": [], "item": [], "pair": []}
        columns: dict[str, list[Tensor]] = {"user": [], "item": [], "pair": []}
        start = 0
        for name, width, kind in model.input_layout():
            names[kind].append(name)
            columns[kind].append(weight[:, start : start + width])
            start += width
        weights = {kind: torch.cat(parts, dim=1).T.contiguous() for kind, parts in columns.items()}
        bias = torch.cat([layer.bias for layer in layers])  # (H,)
    return SplitFirstLayers(names, weights, bias)


def item_first_layer(
    model: RankingModel, enc: ItemEncoding, ctr_windows: Tensor | None, split: SplitFirstLayers
) -> Tensor:
    """(N, H): the "item" blocks' share of every MMoE first layer (no bias), for
    `score_encoded`."""
    blocks = model.item_blocks(enc, ctr_windows)
    return torch.cat([blocks[name] for name in split.names["item"]], dim=1) @ split.weights["item"]


def score_encoded(
    model: RankingModel,
    user: UserInputs,
    enc: ItemEncoding,
    histories: dict[str, Tensor],
    age_hours: Tensor | None,
    item_first_layer: Tensor,
    split: SplitFirstLayers,
) -> dict[str, Tensor]:
    """`score_candidates` (models/ranking.py) for ONE user (B = 1) from candidates already
    encoded by `model.encode_items`, a history already projected by `model.project_history`
    and the candidates' rows of `item_first_layer` made with `split` (serving precomputes all
    three per catalog): {task: probabilities (N,)}."""
    with inference(model):
        blocks, out = model.input_blocks(user, enc, histories, age_hours, None, item_side=False)
        first = item_first_layer + split.bias
        for kind in ("user", "pair"):  # user rows (1, H) broadcast over the candidates
            inputs = torch.cat([blocks[name] for name in split.names[kind]], dim=1)
            first = first + inputs @ split.weights[kind]
        out.update(model.mmoe.forward_first_layer(first))
    return {task: torch.sigmoid(out[f"logits_{task}"]) for task in model.config.tasks}
