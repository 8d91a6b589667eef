"""Multimodal two-tower recall (issue #4): one item tower and three query towers.

Scope: the PyTorch model over tensors and its loss. Training-set building (Feast), negative
sampling, training loops and the Milvus index live elsewhere; they talk to this file through
the input dataclasses below.

- Item tower: hashed item-ID embedding + text embedding (all-MiniLM-L6-v2, 384-d) + visual
  embedding (EfficientNet-lite0 pooled, 1280-d; for videos the mean over sampled frames) +
  tags (multi-hot classification tags over the categories and a quality score). Each field is
  projected to `field_dim`, the fields interact (AutoInt-style self-attention or FM/DLRM-style
  pairwise dot products), an MLP maps them to an L2-normalised `out_dim` vector.
- Query towers, one per recall channel of the talk:
  - S2V (seed SKU -> video): hashed SKU-ID embedding + the SKU's category;
  - V2V (seed video -> video): the seed goes through the item tower itself, then a light
    residual adapter (zero-initialised, so it starts as the identity);
  - U2V (user -> video): the user's clicked-item sequence in the item-ID space (the table is
    shared with the item tower) pooled by mean or learned attention, plus the user's
    cross-domain category affinity from the product domain.
- Score: cosine(query, item) / temperature = logit.
- Loss (`RecallLoss`): BCE over (query, item, label) rows whose negatives were sampled
  globally at 1:4 (the talk), optionally plus an in-batch sampled softmax over the batch's
  positive rows with logQ popularity correction (Yi et al.).

References:
- seed-article.md (/work/shared): "Multimodal Algorithms for Content Understanding and
  Distribution in JD E-commerce", the multimodal recall section.
- Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
  Networks", CIKM 2019.
- Naumov et al., "Deep Learning Recommendation Model (DLRM)", 2019 (pairwise dot interaction).
- Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations",
  RecSys 2019 (in-batch softmax with logQ correction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrec.vocab import CONTENT_MODALITIES, N_CATEGORIES, TEXT_DIM, VISUAL_DIM
from models.layers import (
    MLP,
    HashEmbedding,
    TensorBatch,
    check_index_range,
    check_tensor,
    inference,
    masked_mean,
    masked_softmax,
    projection,
)

CHANNELS = ("s2v", "v2v", "u2v")
ITEM_FIELDS = ("id", *CONTENT_MODALITIES, "tags")
INTERACTIONS = ("attention", "fm")
SEQ_POOLINGS = ("mean", "attention")


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class ItemInputs(TensorBatch):
    """Content items for the item tower (also the seeds of the V2V channel).

    Fields (B = items): `item_id` (B,) int64; `text_emb` (B, text_dim) float; `visual_emb`
    (B, visual_dim) float; `tags` (B, n_categories) float multi-hot classification tags;
    `quality` (B,) float quality score in [0, 1]. Modality fields may be None when the
    config's `item_fields` leaves them out (`tags` and `quality` belong to field "tags").
    """

    item_id: Tensor
    text_emb: Tensor | None = None
    visual_emb: Tensor | None = None
    tags: Tensor | None = None
    quality: Tensor | None = None


@dataclass
class SkuQuery(TensorBatch):
    """S2V seeds: `sku_id` (B,) int64 and `sku_category` (B,) int64 index into CATEGORIES."""

    sku_id: Tensor
    sku_category: Tensor


@dataclass
class UserQuery(TensorBatch):
    """U2V queries (B = users).

    `seq_item_ids` (B, L) int64 recently clicked content items, padded; `seq_mask` (B, L) bool,
    True = real click (an all-False row is a user with no history); `category_affinity`
    (B, n_categories) float, the user's product-domain category affinities (CDR features).
    """

    seq_item_ids: Tensor
    seq_mask: Tensor
    category_affinity: Tensor


Query = SkuQuery | ItemInputs | UserQuery


@dataclass
class RecallBatch:
    """One training batch of (query, item, label) rows for one channel.

    `labels` (B,) float 1 = clicked pair, 0 = sampled negative (the talk samples 4 global
    negatives per positive). `item_log_q` (B,) float is log of the probability that the row's
    item is sampled as an in-batch candidate (e.g. log popularity share); required when
    `logq_correction` is on and the softmax loss is used.
    """

    channel: str
    query: Query
    items: ItemInputs
    labels: Tensor
    item_log_q: Tensor | None = None


# ---------------------------------------------------------------------------------------------
# Config


@dataclass
class RecallConfig:
    """Sizes and switches of `TwoTowerRecall` and `RecallLoss`."""

    # Hash buckets for item and SKU IDs: about the catalog size keeps collisions rare.
    n_item_buckets: int = 200_000
    n_sku_buckets: int = 200_000
    id_dim: int = 32
    text_dim: int = TEXT_DIM  # all-MiniLM-L6-v2 sentence embedding
    visual_dim: int = VISUAL_DIM  # EfficientNet-lite0 global-pooled features
    n_categories: int = N_CATEGORIES
    # Fields the item tower reads; ("id",) is the ID-only ablation, drop "id" for a pure
    # content tower that serves cold items as well as warm ones.
    item_fields: tuple[str, ...] = ITEM_FIELDS
    field_dim: int = 64  # every field is projected to this width before the interaction
    interaction: str = "attention"  # "attention" (AutoInt) or "fm" (pairwise dot products)
    n_heads: int = 2  # attention heads; must divide field_dim
    hidden_dims: tuple[int, ...] = (256,)  # MLP widths of every tower
    out_dim: int = 64  # the vector Milvus indexes
    seq_pooling: str = "attention"  # U2V history pooling: "mean" or learned-query "attention"
    v2v_adapter: bool = True  # residual linear on seed videos; zero-initialised = identity
    dropout: float = 0.0
    # logit = cosine / temperature; 0.1 lets logits span [-10, 10], enough for BCE to saturate.
    temperature: float = 0.1
    bce_weight: float = 1.0
    softmax_weight: float = 0.0  # in-batch sampled softmax over positive rows; 0 = BCE only
    logq_correction: bool = False  # subtract log q(item) from in-batch softmax logits
    seed: int = 0  # parameter initialisation seed (the global RNG is left untouched)

    def __post_init__(self) -> None:
        positive = {
            "n_item_buckets": self.n_item_buckets,
            "n_sku_buckets": self.n_sku_buckets,
            "id_dim": self.id_dim,
            "text_dim": self.text_dim,
            "visual_dim": self.visual_dim,
            "n_categories": self.n_categories,
            "field_dim": self.field_dim,
            "n_heads": self.n_heads,
            "out_dim": self.out_dim,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"RecallConfig.{name} must be >= 1, got {value}")
        unknown = set(self.item_fields) - set(ITEM_FIELDS)
        if not self.item_fields or unknown or len(set(self.item_fields)) != len(self.item_fields):
            raise ValueError(
                f"RecallConfig.item_fields must be distinct names from {ITEM_FIELDS}, "
                f"got {self.item_fields}"
            )
        if self.interaction not in INTERACTIONS:
            raise ValueError(
                f"RecallConfig.interaction must be one of {INTERACTIONS}, got {self.interaction!r}"
            )
        if self.interaction == "attention" and self.field_dim % self.n_heads:
            raise ValueError(
                f"RecallConfig.n_heads ({self.n_heads}) must divide field_dim ({self.field_dim})"
            )
        if self.seq_pooling not in SEQ_POOLINGS:
            raise ValueError(
                f"RecallConfig.seq_pooling must be one of {SEQ_POOLINGS}, got {self.seq_pooling!r}"
            )
        if self.temperature <= 0:
            raise ValueError(f"RecallConfig.temperature must be > 0, got {self.temperature}")
        if (
            self.bce_weight < 0
            or self.softmax_weight < 0
            or self.bce_weight + self.softmax_weight == 0
        ):
            raise ValueError(
                "RecallConfig.bce_weight and softmax_weight must be >= 0 and not both 0, got "
                f"{self.bce_weight} and {self.softmax_weight}"
            )


# ---------------------------------------------------------------------------------------------
# Blocks


class FieldSelfAttention(nn.Module):
    """One AutoInt layer: multi-head self-attention across fields, residual, LayerNorm.

    (B, F, d) -> (B, F * d)
    """

    def __init__(self, n_fields: int, dim: int, n_heads: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.out_dim = n_fields * dim

    def forward(self, fields: Tensor) -> Tensor:
        mixed, _ = self.attention(fields, fields, fields, need_weights=False)
        fields = self.norm(fields + mixed)  # (B, F, d)
        return fields.flatten(1)  # (B, F * d)


class PairwiseDotInteraction(nn.Module):
    """FM/DLRM-style cross: the fields plus the dot product of every pair of fields.

    (B, F, d) -> (B, F * d + F * (F - 1) / 2)
    """

    def __init__(self, n_fields: int, dim: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(n_fields, n_fields, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        self.out_dim = n_fields * dim + len(rows)

    def forward(self, fields: Tensor) -> Tensor:
        dots = torch.bmm(fields, fields.transpose(1, 2))  # (B, F, F)
        pairs = dots[:, self.pair_rows, self.pair_cols]  # (B, F * (F - 1) / 2)
        return torch.cat([fields.flatten(1), pairs], dim=1)


class AttentionPooling(nn.Module):
    """Pool a padded sequence with a learned query: softmax_l(w . tanh(W k_l)) over valid l.

    keys (B, L, d), mask (B, L) -> (B, d)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, 1, bias=False)

    def forward(self, keys: Tensor, mask: Tensor) -> Tensor:
        scores = self.query(torch.tanh(self.key_proj(keys))).squeeze(-1)  # (B, L)
        weights = masked_softmax(scores, mask)  # (B, L)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, 1, L) @ (B, L, d) -> (B, d)


class ItemTower(nn.Module):
    """Item fields -> per-field projections -> interaction -> MLP -> unit vector (B, out_dim)."""

    def __init__(self, config: RecallConfig, id_embedding: HashEmbedding) -> None:
        super().__init__()
        self.config = config
        self.fields = config.item_fields
        in_dims = {
            "id": config.id_dim,
            "text": config.text_dim,
            "visual": config.visual_dim,
            "tags": config.n_categories + 1,  # multi-hot tags + the quality score
        }
        self.id_embedding = id_embedding
        self.projections = nn.ModuleDict(
            {name: projection(in_dims[name], config.field_dim) for name in self.fields}
        )
        n_fields = len(self.fields)
        self.interaction: FieldSelfAttention | PairwiseDotInteraction
        if config.interaction == "attention":
            self.interaction = FieldSelfAttention(n_fields, config.field_dim, config.n_heads)
        else:
            self.interaction = PairwiseDotInteraction(n_fields, config.field_dim)
        self.mlp = MLP(self.interaction.out_dim, config.hidden_dims, config.out_dim, config.dropout)

    def check(self, items: ItemInputs, name: str = "items") -> None:
        """Raise ValueError when `items` does not fit this tower's config."""
        c = self.config
        check_tensor(f"{name}.item_id", items.item_id, (None,), kind="int")
        b = items.item_id.shape[0]
        if "text" in self.fields:
            check_tensor(f"{name}.text_emb", items.text_emb, (b, c.text_dim), kind="float")
        if "visual" in self.fields:
            check_tensor(f"{name}.visual_emb", items.visual_emb, (b, c.visual_dim), kind="float")
        if "tags" in self.fields:
            check_tensor(f"{name}.tags", items.tags, (b, c.n_categories), kind="float")
            check_tensor(f"{name}.quality", items.quality, (b,), kind="float")

    def _raw_field(self, name: str, items: ItemInputs) -> Tensor:
        if name == "id":
            return self.id_embedding(items.item_id)
        if name == "text":
            return items.text_emb
        if name == "visual":
            return items.visual_emb
        return torch.cat([items.tags, items.quality.unsqueeze(1)], dim=1)  # (B, n_categories + 1)

    def forward(self, items: ItemInputs) -> Tensor:
        fields = torch.stack(
            [self.projections[name](self._raw_field(name, items)) for name in self.fields], dim=1
        )  # (B, F, field_dim)
        return F.normalize(self.mlp(self.interaction(fields)), dim=-1)


class SkuTower(nn.Module):
    """S2V query: [hashed SKU embedding, category embedding] -> MLP -> unit vector."""

    def __init__(self, config: RecallConfig) -> None:
        super().__init__()
        self.n_categories = config.n_categories
        self.sku_embedding = HashEmbedding(config.n_sku_buckets, config.id_dim)
        self.category_embedding = nn.Embedding(config.n_categories, config.id_dim)
        self.mlp = MLP(2 * config.id_dim, config.hidden_dims, config.out_dim, config.dropout)

    def check(self, query: SkuQuery) -> None:
        check_tensor("query.sku_id", query.sku_id, (None,), kind="int")
        check_tensor("query.sku_category", query.sku_category, (query.sku_id.shape[0],), kind="int")
        check_index_range("query.sku_category", query.sku_category, self.n_categories)

    def forward(self, query: SkuQuery) -> Tensor:
        x = torch.cat(
            [self.sku_embedding(query.sku_id), self.category_embedding(query.sku_category)], dim=1
        )  # (B, 2 * id_dim)
        return F.normalize(self.mlp(x), dim=-1)


class SeedVideoAdapter(nn.Module):
    """V2V query: v + A v, renormalised, with A zero-initialised (starts as the identity).

    The seed and the candidates share the item tower; the adapter lets "watched after" differ
    from "looks like" without a second tower.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, item_vecs: Tensor) -> Tensor:
        return F.normalize(item_vecs + self.linear(item_vecs), dim=-1)


class UserTower(nn.Module):
    """U2V query: pooled click history (item-ID space) + category affinity -> MLP -> unit vector."""

    def __init__(self, config: RecallConfig, id_embedding: HashEmbedding) -> None:
        super().__init__()
        self.n_categories = config.n_categories
        self.id_embedding = id_embedding
        self.pooling = (
            AttentionPooling(config.id_dim) if config.seq_pooling == "attention" else None
        )
        self.mlp = MLP(
            config.id_dim + config.n_categories, config.hidden_dims, config.out_dim, config.dropout
        )

    def check(self, query: UserQuery) -> None:
        ids = check_tensor("query.seq_item_ids", query.seq_item_ids, (None, None), kind="int")
        check_tensor("query.seq_mask", query.seq_mask, tuple(ids.shape), kind="bool")
        check_tensor(
            "query.category_affinity",
            query.category_affinity,
            (ids.shape[0], self.n_categories),
            kind="float",
        )

    def forward(self, query: UserQuery) -> Tensor:
        history = self.id_embedding(query.seq_item_ids)  # (B, L, id_dim)
        if self.pooling is None:
            pooled = masked_mean(history, query.seq_mask)
        else:
            pooled = self.pooling(history, query.seq_mask)  # (B, id_dim)
        x = torch.cat([pooled, query.category_affinity], dim=1)  # (B, id_dim + n_categories)
        return F.normalize(self.mlp(x), dim=-1)


# ---------------------------------------------------------------------------------------------
# Model


class TwoTowerRecall(nn.Module):
    """The recall model: item tower + S2V/V2V/U2V query towers; returns logits and vectors.

    The item-ID table is shared by the item tower and the U2V history, so a clicked item means
    the same thing on both sides.
    """

    def __init__(self, config: RecallConfig) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.item_id_embedding = HashEmbedding(config.n_item_buckets, config.id_dim)
            self.item_tower = ItemTower(config, self.item_id_embedding)
            self.sku_tower = SkuTower(config)
            self.v2v_adapter = SeedVideoAdapter(config.out_dim) if config.v2v_adapter else None
            self.user_tower = UserTower(config, self.item_id_embedding)

    def encode_items(self, items: ItemInputs) -> Tensor:
        """Item vectors for the index. items (B rows) -> (B, out_dim), unit norm."""
        self.item_tower.check(items)
        return self.item_tower(items)

    def encode_queries(self, channel: str, query: Query) -> Tensor:
        """Query vectors of one channel ("s2v", "v2v", "u2v") -> (B, out_dim), unit norm."""
        expected = {"s2v": SkuQuery, "v2v": ItemInputs, "u2v": UserQuery}
        if channel not in expected:
            raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
        if not isinstance(query, expected[channel]):
            raise ValueError(
                f"channel {channel!r} takes a {expected[channel].__name__} query, "
                f"got {type(query).__name__}"
            )
        if channel == "s2v":
            self.sku_tower.check(query)
            return self.sku_tower(query)
        if channel == "u2v":
            self.user_tower.check(query)
            return self.user_tower(query)
        self.item_tower.check(query, name="query")
        seed_vecs = self.item_tower(query)
        return seed_vecs if self.v2v_adapter is None else self.v2v_adapter(seed_vecs)

    def forward(self, channel: str, query: Query, items: ItemInputs) -> dict[str, Tensor]:
        """Score row-aligned (query, item) pairs.

        Returns:
            "logits" (B,) cosine / temperature; "query_vecs" and "item_vecs" (B, out_dim).
        """
        query_vecs = self.encode_queries(channel, query)
        item_vecs = self.encode_items(items)
        if query_vecs.shape[0] != item_vecs.shape[0]:
            raise ValueError(
                f"query and items must have the same number of rows, got {query_vecs.shape[0]} "
                f"and {item_vecs.shape[0]}"
            )
        logits = (query_vecs * item_vecs).sum(-1) / self.config.temperature  # (B,)
        return {"logits": logits, "query_vecs": query_vecs, "item_vecs": item_vecs}


# ---------------------------------------------------------------------------------------------
# Loss


def in_batch_softmax_loss(
    query_vecs: Tensor,
    item_vecs: Tensor,
    item_ids: Tensor,
    temperature: float,
    item_log_q: Tensor | None = None,
) -> Tensor:
    """Sampled softmax where each positive pair's item is a negative for every other query.

    Args:
        query_vecs, item_vecs: (P, d) unit vectors of P positive pairs, row-aligned.
        item_ids: (P,) int64; another row holding the same item is not counted as a negative
            (an "accidental hit").
        temperature: logit = cosine / temperature.
        item_log_q: (P,) log probability that each item appears as an in-batch candidate;
            when given, subtracted from its column (logQ correction), so popular items are not
            over-penalised for being sampled often.
    Returns:
        scalar mean cross-entropy; 0 when P < 2 (no negatives).
    """
    n = query_vecs.shape[0]
    if n < 2:
        return query_vecs.new_zeros(())
    logits = query_vecs @ item_vecs.T / temperature  # (P, P)
    if item_log_q is not None:
        logits = logits - item_log_q.unsqueeze(0)
    same_item = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)  # (P, P)
    accidental = same_item & ~torch.eye(n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(accidental, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


class RecallLoss(nn.Module):
    """Training wrapper: `bce_weight` * BCE(pairs) + `softmax_weight` * in-batch softmax.

    BCE runs on every (query, item, label) row. The softmax uses only rows with label 1, each
    positive item acting as a negative for the other rows' queries.
    """

    def __init__(self, model: TwoTowerRecall) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: RecallBatch) -> dict[str, Tensor]:
        """Returns "loss" (scalar to backpropagate), "loss_bce", "loss_softmax" and "logits" (B,)."""
        config = self.model.config
        out = self.model(batch.channel, batch.query, batch.items)
        n = out["logits"].shape[0]
        labels = check_tensor("batch.labels", batch.labels, (n,), kind="float")
        loss_bce = F.binary_cross_entropy_with_logits(out["logits"], labels)
        loss_softmax = out["logits"].new_zeros(())
        if config.softmax_weight > 0:
            log_q = None
            if config.logq_correction:
                log_q = check_tensor("batch.item_log_q", batch.item_log_q, (n,), kind="float")
            positive = labels > 0.5
            loss_softmax = in_batch_softmax_loss(
                out["query_vecs"][positive],
                out["item_vecs"][positive],
                batch.items.item_id[positive],
                config.temperature,
                None if log_q is None else log_q[positive],
            )
        loss = config.bce_weight * loss_bce + config.softmax_weight * loss_softmax
        return {
            "loss": loss,
            "loss_bce": loss_bce.detach(),
            "loss_softmax": loss_softmax.detach(),
            "logits": out["logits"].detach(),
        }


# ---------------------------------------------------------------------------------------------
# Inference helpers


def score_pairs(model: TwoTowerRecall, channel: str, query: Query, items: ItemInputs) -> Tensor:
    """Click probabilities of row-aligned (query, item) pairs, in eval mode: (B,)."""
    with inference(model):
        return torch.sigmoid(model(channel, query, items)["logits"])


def _encode_in_chunks(
    encode: Callable[[TensorBatch], Tensor], batch: TensorBatch, batch_size: int
) -> Tensor:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = batch.batch_size
    chunks = [encode(batch.take(slice(i, i + batch_size))) for i in range(0, n, batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def encode_items(model: TwoTowerRecall, items: ItemInputs, batch_size: int = 4096) -> Tensor:
    """Item vectors for indexing, `batch_size` items at a time in eval mode: (N, out_dim)."""
    with inference(model):
        vecs = _encode_in_chunks(model.encode_items, items, batch_size)
    return vecs.reshape(-1, model.config.out_dim)  # (N, out_dim), also when N == 0


def encode_queries(
    model: TwoTowerRecall, channel: str, query: Query, batch_size: int = 4096
) -> Tensor:
    """Query vectors of one channel, `batch_size` rows at a time in eval mode: (B, out_dim)."""
    with inference(model):
        vecs = _encode_in_chunks(lambda q: model.encode_queries(channel, q), query, batch_size)
    return vecs.reshape(-1, model.config.out_dim)  # (B, out_dim), also when B == 0


__all__ = [
    "CHANNELS",
    "ITEM_FIELDS",
    "ItemInputs",
    "RecallBatch",
    "RecallConfig",
    "RecallLoss",
    "SkuQuery",
    "TwoTowerRecall",
    "UserQuery",
    "encode_items",
    "encode_queries",
    "in_batch_softmax_loss",
    "score_pairs",
]
