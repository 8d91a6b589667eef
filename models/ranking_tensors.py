"""The tensors of one ranking forward pass (models/ranking.py): the user and the request
context (`UserInputs`), N candidates (`CandidateInputs`), and what the model computes from the
candidates alone (`ItemEncoding`, which serving computes once per catalog snapshot). Shapes in
each docstring; `check_inputs` holds inputs to them and to a config."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from models.layers import TensorBatch, check_index_range, check_tensor
from models.ranking_config import RankingConfig


@dataclass
class UserInputs(TensorBatch):
    """The user and the request context; B = 1 (broadcast to all N candidates) or B = N.

    Fields:
        seq_item_ids: (B, L) int64 recently clicked content items, padded.
        seq_mask: (B, L) bool, True = real click (an all-False row = no history).
        position: (B,) int64 index into POSITIONS (home, inner, detail).
        source: (B,) int64 index into SOURCES (search, rec).
        category_affinity: (B, n_categories) float product-domain category affinities;
            needed by use_cdr.
        seq_text_emb: (B, L, text_dim) float text embeddings of the clicked items; use_min.
        seq_visual_emb: (B, L, visual_dim) float visual embeddings of them; use_min.
        user_id: (B,) int64 the user's key, -1 = a user the model was not trained on (its
            embedding is zero); needed by use_user_id.
        seq_category: (B, L) int64 category index of each clicked item, -1 = unknown or
            padding; needed by use_history_category.
        seq_popularity: (B, L) float impressions in 7 days of each clicked item (0 = none or
            padding); needed by use_popularity.
        seq_recall_vector: (B, L, recall_dim) float the recall item tower's vectors of the
            clicked items (0 for padding); needed by use_recall_vector.
    """

    seq_item_ids: Tensor
    seq_mask: Tensor
    position: Tensor
    source: Tensor
    category_affinity: Tensor | None = None
    seq_text_emb: Tensor | None = None
    seq_visual_emb: Tensor | None = None
    user_id: Tensor | None = None
    seq_category: Tensor | None = None
    seq_popularity: Tensor | None = None
    seq_recall_vector: Tensor | None = None


@dataclass
class CandidateInputs(TensorBatch):
    """N candidate content items.

    Fields:
        item_id: (N,) int64.
        material: (N,) int64 index into MATERIALS (video, live, shop, aggregated).
        category: (N,) int64 index into CATEGORIES; needed by use_cdr.
        text_emb: (N, text_dim) float; use_multimodal.
        visual_emb: (N, visual_dim) float; use_multimodal.
        age_hours: (N,) float hours since the item was published; use_timeliness.
        ctr_windows: (N, n_ctr_windows) float windowed CTRs (e.g. 1h, 6h, 1d, 7d); use_timeliness.
        is_cold: (N,) bool, True = no interaction history, ID embedding is zeroed. Optional.
        popularity: (N, 2) float impressions in 1 and 7 days; use_popularity.
        recall_vector: (N, recall_dim) float the recall item tower's vector (the one the
            vector index holds); use_recall_vector.
    """

    item_id: Tensor
    material: Tensor
    category: Tensor | None = None
    text_emb: Tensor | None = None
    visual_emb: Tensor | None = None
    age_hours: Tensor | None = None
    ctr_windows: Tensor | None = None
    is_cold: Tensor | None = None
    popularity: Tensor | None = None
    recall_vector: Tensor | None = None


@dataclass
class ItemEncoding(TensorBatch):
    """What `RankingModel.encode_items` computes from N candidates alone: it depends on no
    user and no request time, so serving computes it once per catalog snapshot and gathers
    rows per request (serving/ranker.py).

    Fields: id_emb (N, d) ID embeddings (zero for cold items); material_emb (N, context_dim);
    category (N,) for CDR; text / visual (N, d) projected modality vectors (multimodal);
    text_fake / visual_fake (N, d) the DSN generators' output from the ID embedding;
    popularity (N, 2) log impressions (use_popularity); recall_vector (N, recall_dim)
    (use_recall_vector).
    """

    id_emb: Tensor
    material_emb: Tensor
    category: Tensor | None = None
    text: Tensor | None = None
    visual: Tensor | None = None
    text_fake: Tensor | None = None
    visual_fake: Tensor | None = None
    popularity: Tensor | None = None
    recall_vector: Tensor | None = None


def check_inputs(config: RankingConfig, user: UserInputs, items: CandidateInputs) -> int:
    """Raise ValueError when the inputs do not fit the config; return N (candidates)."""
    c = config
    check_tensor("candidates.item_id", items.item_id, (None,), kind="int")
    n = items.item_id.shape[0]
    if n < 1:
        raise ValueError("candidates must hold at least one item")
    check_tensor("candidates.material", items.material, (n,), kind="int")
    check_index_range("candidates.material", items.material, c.n_materials)
    if items.is_cold is not None:
        check_tensor("candidates.is_cold", items.is_cold, (n,), kind="bool")

    seq = check_tensor("user.seq_item_ids", user.seq_item_ids, (None, None), kind="int")
    b, length = seq.shape
    if b not in (1, n):
        raise ValueError(
            f"user inputs must have 1 row (broadcast) or one row per candidate ({n}), got {b}"
        )
    check_tensor("user.seq_mask", user.seq_mask, (b, length), kind="bool")
    check_tensor("user.position", user.position, (b,), kind="int")
    check_index_range("user.position", user.position, c.n_positions)
    check_tensor("user.source", user.source, (b,), kind="int")
    check_index_range("user.source", user.source, c.n_sources)
    if c.use_user_id:
        check_tensor("user.user_id", user.user_id, (b,), kind="int")
    if c.use_history_category:
        seq_category = check_tensor("user.seq_category", user.seq_category, (b, length), kind="int")
        if seq_category.numel() and (
            int(seq_category.min()) < -1 or int(seq_category.max()) >= c.n_categories
        ):
            raise ValueError(f"user.seq_category must hold indices in [0, {c.n_categories}) or -1")

    widths = {"text": c.text_dim, "visual": c.visual_dim}
    for m in c.content_modalities if c.use_multimodal else ():
        emb = getattr(items, f"{m}_emb")
        check_tensor(f"candidates.{m}_emb", emb, (n, widths[m]), kind="float")
        if c.use_min:
            seq = getattr(user, f"seq_{m}_emb")
            check_tensor(f"user.seq_{m}_emb", seq, (b, length, widths[m]), kind="float")
    if c.use_cdr:
        check_tensor(
            "user.category_affinity",
            user.category_affinity,
            (b, c.n_categories),
            kind="float",
        )
    if c.use_cdr or c.use_history_category:
        check_tensor("candidates.category", items.category, (n,), kind="int")
        category = items.category
        if category.numel() and (int(category.min()) < -1 or int(category.max()) >= c.n_categories):
            raise ValueError(
                f"candidates.category must hold indices in [0, {c.n_categories}) or -1 "
                f"(outside the data's category list), got values in "
                f"[{int(category.min())}, {int(category.max())}]"
            )
    if c.use_timeliness:
        check_tensor("candidates.age_hours", items.age_hours, (n,), kind="float")
        check_tensor(
            "candidates.ctr_windows", items.ctr_windows, (n, c.n_ctr_windows), kind="float"
        )
    if c.use_popularity:
        check_tensor("candidates.popularity", items.popularity, (n, 2), kind="float")
        check_tensor("user.seq_popularity", user.seq_popularity, (b, length), kind="float")
    if c.use_recall_vector:
        width = c.recall_dim
        check_tensor("candidates.recall_vector", items.recall_vector, (n, width), kind="float")
        check_tensor(
            "user.seq_recall_vector", user.seq_recall_vector, (b, length, width), kind="float"
        )
    return n
