"""Multi-task multimodal ranking (issue #5): MMoE over ID, multimodal, GMF, CDR and timeliness.

Scope: the PyTorch model over tensors, its loss and a one-user scoring function. Feast
training-set builders, training loops and evaluation live elsewhere and talk to this file
through `UserInputs`, `CandidateInputs` and per-task label dicts.

Feature blocks, each switched by `RankingConfig` (all off = the ID-only MMoE baseline):

- always: hashed item-ID embedding, DIN target attention of the candidate ID over the user's
  clicked-item sequence, context embeddings (position, source, material).
- `use_multimodal`: text (384-d MiniLM) and visual (1280-d EfficientNet-lite0) embeddings,
  each projected into the `embed_dim` space the ID embeddings live in.
- `use_dsn` (GMF, needs multimodal): per modality, a generator maps the item-ID embedding into
  that modality's projected space and a discriminator, conditioned on the ID embedding, tells
  the real projected modality vector from the generated one (our reading of the talk's CGGN:
  a conditional GAN). The ranker gets the residual real - generated: what the modality says
  that the ID embedding does not.
- `use_min` (GMF, needs multimodal): the user's interest distribution over the modalities
  (ID, text, visual) is a softmax over user features (pooled histories + CDR affinities); the
  candidate attends over the user's history in each modality's space, and the three pooled
  vectors are fused with those weights.
- `use_cdr`: the user's product-domain category affinities (n_categories floats) and the
  affinity at the candidate's category (a scalar).
- `use_timeliness`: log1p(item age in hours) and windowed CTRs (`n_ctr_windows` floats).

Cold start: a candidate with `is_cold` True gets an all-zero ID embedding, so it is ranked by
its modality projections (and DSN residuals, which become real - G(0)). During training
`id_dropout` zeroes the ID embedding of random candidates so the model learns that path.

Adversarial training (DSN) without a second backward pass: `RankingLoss` returns
`loss_gen_adv` computed through a frozen copy of the discriminator's parameters (so it moves
only the generator and the ID embeddings) and `loss_disc` computed on detached inputs (so it
moves only the discriminator). The two players' objectives touch disjoint parameters, so
`loss` = task losses + adversarial_weight * loss_gen_adv + loss_disc can be backpropagated once
and stepped with one optimizer, or with two (`ranking_parameter_groups`, `train_step`) when
the discriminator needs its own learning rate.

Sparse labels (share, comment, cart, favorite): two levers in the config. `pos_weight`
(BCEWithLogits pos_weight, set by training from the data's label rates) upweights a task's
rare positives inside its own loss, so its tower does not collapse to "never"; `task_weights`
sets each task's share of the total. pos_weight != 1 shifts that task's probabilities upward (they are
no longer calibrated); ranking order within a task is what it is trained for. Label masks
leave undefined labels out (e.g. watch for shop pages).

References:
- seed-article.md (/work/shared): the multimodal ranking, GMF (DSN + MIN) and CDR sections.
- Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
  Mixture-of-Experts", KDD 2018 (MMoE).
- Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018.
- Bousmalis et al., "Domain Separation Networks", NeurIPS 2016 (shared vs private parts).
- Mirza and Osindero, "Conditional Generative Adversarial Nets", 2014.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from mmrec.vocab import (
    CONTENT_MODALITIES,
    MATERIALS,
    N_CATEGORIES,
    POSITIONS,
    RANKING_TASKS,
    SOURCES,
    TEXT_DIM,
    VISUAL_DIM,
)
from models.layers import (
    MLP,
    HashEmbedding,
    TargetAttention,
    TensorBatch,
    check_index_range,
    check_tensor,
    inference,
    masked_mean,
    projection,
)

# ---------------------------------------------------------------------------------------------
# Inputs


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
    """

    item_id: Tensor
    material: Tensor
    category: Tensor | None = None
    text_emb: Tensor | None = None
    visual_emb: Tensor | None = None
    age_hours: Tensor | None = None
    ctr_windows: Tensor | None = None
    is_cold: Tensor | None = None


@dataclass
class ItemEncoding(TensorBatch):
    """What `RankingModel.encode_items` computes from N candidates alone: it depends on no
    user and no request time, so serving computes it once per catalog snapshot and gathers
    rows per request (serving/ranker.py).

    Fields: id_emb (N, d) ID embeddings (zero for cold items); material_emb (N, context_dim);
    category (N,) for CDR; text / visual (N, d) projected modality vectors (multimodal);
    text_fake / visual_fake (N, d) the DSN generators' output from the ID embedding.
    """

    id_emb: Tensor
    material_emb: Tensor
    category: Tensor | None = None
    text: Tensor | None = None
    visual: Tensor | None = None
    text_fake: Tensor | None = None
    visual_fake: Tensor | None = None


@dataclass(frozen=True)
class SplitFirstLayers:
    """The MMoE first layers' weights by input kind (`RankingModel.split_first_layers`):
    names {kind: block names in input order}, weights {kind: (width of those blocks, H)}, bias
    (H,); kinds as in `RankingModel.input_layout`."""

    names: dict[str, list[str]]
    weights: dict[str, Tensor]
    bias: Tensor


# ---------------------------------------------------------------------------------------------
# Config

# RankingConfig's stored format: 2 = today's defaults (RankingConfig.upgrade_stored).
CONFIG_VERSION = 2
VERSION_1_DEFAULTS = {"use_history_category": False, "log_rates": False, "min_match": False}


@dataclass
class RankingConfig:
    """Sizes, switches and loss settings of `RankingModel` and `RankingLoss`."""

    tasks: tuple[str, ...] = RANKING_TASKS
    n_item_buckets: int = 200_000  # hashed item-ID rows; about the catalog size
    n_user_buckets: int = 200_000  # hashed user-ID rows (use_user_id)
    # Width of ID embeddings and of every modality projection: one space, so DSN residuals
    # (real - generated) and MIN's weighted sum of modality pools are well defined.
    embed_dim: int = 32
    text_dim: int = TEXT_DIM  # all-MiniLM-L6-v2
    visual_dim: int = VISUAL_DIM  # EfficientNet-lite0 pooled
    n_categories: int = N_CATEGORIES
    n_positions: int = len(POSITIONS)
    n_sources: int = len(SOURCES)
    n_materials: int = len(MATERIALS)
    context_dim: int = 8  # position / source / material embedding width
    n_ctr_windows: int = 4
    attention_hidden: int = 32  # hidden width of target-attention, DSN and MIN nets
    n_experts: int = 4
    expert_dims: tuple[int, ...] = (128, 64)
    tower_dims: tuple[int, ...] = (32,)
    dropout: float = 0.0
    use_multimodal: bool = True
    # The content modalities the data has (text always; visual when the catalog has covers):
    # projections, DSN generators and MIN's interest weights exist for these only.
    content_modalities: tuple[str, ...] = CONTENT_MODALITIES
    use_dsn: bool = True
    use_min: bool = True
    use_cdr: bool = True
    use_timeliness: bool = True
    # A user-ID embedding and its element-wise crosses with the candidate's ID and modality
    # vectors: what one user's impressions (clicked or not) say about their taste. Opt-in:
    # measured not to pay on the small world (test click AUC 0.664 / 0.665 with user dropout
    # 0.1 / 0.5 vs 0.667 without: it overfits after one epoch).
    use_user_id: bool = False
    # The user's click share per category over the click history, and the share at the
    # candidate's category: category interest in the content domain (CDR's is the product
    # domain's).
    use_history_category: bool = True
    # CTR windows and history category shares enter as logs (`log_rate`), the shares smoothed
    # by half a click per category: a rate's effect on a click's log-odds is about linear in
    # its log, and 0.04 vs 0.08 is a small step for a raw input. Test click AUC on the small
    # world 0.704 -> 0.722 (cold items 0.656 -> 0.683).
    log_rates: bool = True
    # With use_min (ignored without it), MIN also hands the ranker, per modality (ID and
    # content), the interest-weighted match w_m * <candidate_m, pool_m> / sqrt(d) of the
    # candidate with its attention pool over the user's history in that space: the user x item
    # product an MLP over concatenated vectors learns slowly.
    min_match: bool = True
    # Training-only probability of zeroing a candidate's ID embedding (the cold path).
    id_dropout: float = 0.1
    # Training-only probability of zeroing a user's embedding (the path of users unseen in
    # training, who are served with user_id -1).
    user_id_dropout: float = 0.1
    # BCE pos_weight per task (missing = 1.0); see the module docstring on sparse labels.
    # Training sets them from the data's label rates (training/rank_train.py).
    pos_weight: dict[str, float] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=dict)  # missing = 1.0
    adversarial_weight: float = 0.1  # generator's adversarial loss in the total; small = stable
    seed: int = 0  # parameter initialisation seed (the global RNG is left untouched)
    # The stored config's format (`upgrade_stored`); a config saved without one is version 1.
    config_version: int = CONFIG_VERSION

    @staticmethod
    def upgrade_stored(fields: dict[str, Any]) -> dict[str, Any]:
        """A stored config's fields in this version's terms. Version 1 (saved before configs
        carried a version) had use_history_category, log_rates and min_match off by default:
        a version 1 config that lacks one of them (saved before the field existed) was
        trained without it and takes that default, not today's."""
        version = fields.get("config_version", 1)
        if version > CONFIG_VERSION:
            raise ValueError(
                f"a ranking config of version {version}, newer than this code's "
                f"{CONFIG_VERSION}: upgrade mmrec to load the model"
            )
        if version == 1:
            fields = {**VERSION_1_DEFAULTS, **fields}
        return {**fields, "config_version": CONFIG_VERSION}

    def __post_init__(self) -> None:
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(
                f"RankingConfig.tasks must be distinct and non-empty, got {self.tasks}"
            )
        positive = {
            "n_item_buckets": self.n_item_buckets,
            "n_user_buckets": self.n_user_buckets,
            "embed_dim": self.embed_dim,
            "text_dim": self.text_dim,
            "visual_dim": self.visual_dim,
            "n_categories": self.n_categories,
            "n_positions": self.n_positions,
            "n_sources": self.n_sources,
            "n_materials": self.n_materials,
            "context_dim": self.context_dim,
            "n_ctr_windows": self.n_ctr_windows,
            "attention_hidden": self.attention_hidden,
            "n_experts": self.n_experts,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"RankingConfig.{name} must be >= 1, got {value}")
        if not self.content_modalities or set(self.content_modalities) - set(CONTENT_MODALITIES):
            raise ValueError(
                f"RankingConfig.content_modalities must be some of {CONTENT_MODALITIES}, "
                f"got {self.content_modalities}"
            )
        if not self.expert_dims:
            raise ValueError("RankingConfig.expert_dims must name at least one layer width")
        for name in ("use_dsn", "use_min"):
            if getattr(self, name) and not self.use_multimodal:
                raise ValueError(f"RankingConfig.{name} needs use_multimodal=True")
        for name in ("id_dropout", "user_id_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"RankingConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        for name in ("pos_weight", "task_weights"):
            weights = getattr(self, name)
            unknown = set(weights) - set(self.tasks)
            if unknown:
                raise ValueError(f"RankingConfig.{name} names unknown tasks {sorted(unknown)}")
            negative = {t: w for t, w in weights.items() if w < 0}
            if negative:
                raise ValueError(f"RankingConfig.{name} must be >= 0, got {negative}")
        if self.adversarial_weight < 0:
            raise ValueError(
                f"RankingConfig.adversarial_weight must be >= 0, got {self.adversarial_weight}"
            )


# ---------------------------------------------------------------------------------------------
# Blocks


class DSNResidual(nn.Module):
    """GMF's DSN: per content modality, a generator G_m(id) into the modality's projected
    space and a conditional discriminator D_m(id, v) -> logit(v is the item's real vector).

    The ranker consumes residual_m = real_m - G_m(id), computed by the model.
    """

    def __init__(self, dim: int, hidden: int, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.generators = nn.ModuleDict({m: MLP(dim, (hidden,), dim) for m in modalities})
        self.discriminators = nn.ModuleDict({m: MLP(2 * dim, (hidden,), 1) for m in modalities})

    def forward(self, id_emb: Tensor) -> dict[str, Tensor]:
        """id_emb (N, d) -> {modality: generated (N, d)}"""
        return {m: generator(id_emb) for m, generator in self.generators.items()}

    def discriminate(
        self, modality: str, id_emb: Tensor, vecs: Tensor, *, frozen: bool = False
    ) -> Tensor:
        """Discriminator logits (N,) for `vecs` (N, d) given the condition `id_emb` (N, d).

        frozen=True runs the discriminator with detached parameters: gradients reach `vecs`
        (the generator) but never the discriminator.
        """
        disc = self.discriminators[modality]
        x = torch.cat([id_emb, vecs], dim=1)  # (N, 2d)
        if frozen:
            params = {name: p.detach() for name, p in disc.named_parameters()}
            return functional_call(disc, params, (x,)).squeeze(1)
        return disc(x).squeeze(1)


class ModalityInterest(nn.Module):
    """GMF's MIN: user features -> softmax weights over ID + the content modalities;
    candidates attend over the user's history in each content space (the ID-space pool comes
    from the model); the fused interest is the weighted sum of the pooled vectors.
    """

    def __init__(self, user_dim: int, dim: int, hidden: int, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.modalities = modalities
        self.interest = MLP(user_dim, (hidden,), 1 + len(modalities))
        self.attention = nn.ModuleDict({m: TargetAttention(dim, hidden) for m in modalities})

    def forward(
        self,
        user_vec: Tensor,
        id_query: Tensor,
        id_pool: Tensor,
        queries: dict[str, Tensor],
        histories: dict[str, Tensor],
        mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            user_vec: (B, user_dim), B = 1 or N.
            id_query: (N, d) the candidate's ID embedding.
            id_pool: (N, d) the candidate's attention pool over the history in ID space.
            queries: {modality} -> (N, d) candidate projections.
            histories: {modality} -> (B, L, d) projected history.
            mask: (B, L) bool.
        Returns:
            fused (N, d), the interest weights (B, M) over ("id", *modalities), M <= 3, and
            the weighted matches (N, M): w_m * <query_m, pool_m> / sqrt(d).
        """
        weights = torch.softmax(self.interest(user_vec), dim=-1)  # (B, M)
        pools = [id_pool] + [
            self.attention[m](queries[m], histories[m], mask) for m in self.modalities
        ]
        stacked = torch.stack(pools, dim=1)  # (N, M, d)
        fused = (weights.unsqueeze(-1) * stacked).sum(1)  # (B, M, 1) * (N, M, d) -> (N, d)
        targets = torch.stack([id_query] + [queries[m] for m in self.modalities], dim=1)
        match = (targets * stacked).sum(-1) / stacked.shape[-1] ** 0.5  # (N, M)
        return fused, weights, weights * match


class MMoE(nn.Module):
    """Shared experts, one softmax gate and one tower per task: x (N, D) -> {logits_t: (N,)}."""

    def __init__(
        self,
        in_dim: int,
        tasks: tuple[str, ...],
        n_experts: int,
        expert_dims: tuple[int, ...],
        tower_dims: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            [MLP(in_dim, expert_dims, dropout=dropout) for _ in range(n_experts)]
        )
        expert_out = expert_dims[-1]
        self.gates = nn.ModuleDict({t: nn.Linear(in_dim, n_experts) for t in tasks})
        self.towers = nn.ModuleDict({t: MLP(expert_out, tower_dims, 1, dropout) for t in tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (N, E, h)
        return self._towers(experts, [gate(x) for gate in self.gates.values()])

    def _towers(self, experts: Tensor, gate_logits: list[Tensor]) -> dict[str, Tensor]:
        logits = {}
        for task, gate in zip(self.gates, gate_logits, strict=True):
            weights = torch.softmax(gate, dim=-1).unsqueeze(-1)  # (N, E, 1)
            mixed = (weights * experts).sum(1)  # (N, h); 6x faster than bmm at N = 500
            logits[f"logits_{task}"] = self.towers[task](mixed).squeeze(1)  # (N,)
        return logits

    def first_layers(self) -> list[nn.Linear]:
        """Every linear layer that reads x: each expert's first, then each task's gate."""
        return [expert[0] for expert in self.experts] + list(self.gates.values())

    def first_layer_bias(self) -> Tensor:
        return torch.cat([layer.bias for layer in self.first_layers()])

    def forward_first_layer(self, first: Tensor) -> dict[str, Tensor]:
        """`forward` from the first layers' outputs (N, H), laid out as `first_layers`."""
        parts = first.split([layer.out_features for layer in self.first_layers()], dim=1)
        n_experts = len(self.experts)
        outputs = []
        for expert, hidden in zip(self.experts, parts, strict=False):
            for layer in list(expert)[1:]:  # what follows the first layer
                hidden = layer(hidden)
            outputs.append(hidden)
        return self._towers(torch.stack(outputs, dim=1), list(parts[n_experts:]))  # (N, E, h)


# ---------------------------------------------------------------------------------------------
# Model


class RankingModel(nn.Module):
    """MMoE ranker; `forward(user, candidates)` returns logits per task and GMF internals.

    Returned keys: "logits_{task}" (N,) for every task; with use_dsn "dsn_condition" (N, d)
    and "dsn_real_{m}", "dsn_fake_{m}" (N, d) for m in (text, visual), which `RankingLoss`
    uses for the adversarial losses; with use_min "min_weights" (B, 1 + M) over ("id",
    *content_modalities).
    """

    def __init__(self, config: RankingConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d = c.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.item_id_embedding = HashEmbedding(c.n_item_buckets, d)
            self.id_attention = TargetAttention(d, c.attention_hidden)
            self.position_embedding = nn.Embedding(c.n_positions, c.context_dim)
            self.source_embedding = nn.Embedding(c.n_sources, c.context_dim)
            self.material_embedding = nn.Embedding(c.n_materials, c.context_dim)
            self.text_proj = self.visual_proj = None
            self.dsn = self.min = None
            modalities = c.content_modalities
            if c.use_multimodal:
                self.text_proj = projection(c.text_dim, d) if "text" in modalities else None
                self.visual_proj = projection(c.visual_dim, d) if "visual" in modalities else None
            if c.use_dsn:
                self.dsn = DSNResidual(d, c.attention_hidden, modalities)
            if c.use_min:
                user_dim = (1 + len(modalities)) * d + (c.n_categories if c.use_cdr else 0)
                self.min = ModalityInterest(user_dim, d, c.attention_hidden, modalities)
            self.user_id_embedding = None
            if c.use_user_id:
                self.user_id_embedding = HashEmbedding(c.n_user_buckets, d)
            in_dim = sum(width for _, width, _ in self.input_layout())
            self.mmoe = MMoE(in_dim, c.tasks, c.n_experts, c.expert_dims, c.tower_dims, c.dropout)

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """The DSN discriminators' parameters (empty without use_dsn)."""
        if self.dsn is not None:
            yield from self.dsn.discriminators.parameters()

    def check_inputs(self, user: UserInputs, items: CandidateInputs) -> int:
        """Raise ValueError when the inputs do not fit the config; return N (candidates)."""
        c = self.config
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
            seq_category = check_tensor(
                "user.seq_category", user.seq_category, (b, length), kind="int"
            )
            if seq_category.numel() and (
                int(seq_category.min()) < -1 or int(seq_category.max()) >= c.n_categories
            ):
                raise ValueError(
                    f"user.seq_category must hold indices in [0, {c.n_categories}) or -1"
                )

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
            if category.numel() and (
                int(category.min()) < -1 or int(category.max()) >= c.n_categories
            ):
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
        return n

    def _candidate_id_embedding(self, items: CandidateInputs) -> Tensor:
        """(N, d) ID embeddings, zeroed for cold candidates and, in training, for a random
        `id_dropout` share of them (the cold path)."""
        emb = self.item_id_embedding(items.item_id)  # (N, d)
        keep = None
        if items.is_cold is not None:
            keep = ~items.is_cold
        if self.training and self.config.id_dropout > 0:
            kept = torch.rand(emb.shape[0], device=emb.device) >= self.config.id_dropout
            keep = kept if keep is None else keep & kept
        return emb if keep is None else emb * keep.unsqueeze(1).to(emb.dtype)

    def encode_items(self, items: CandidateInputs) -> ItemEncoding:
        """What the model computes from the candidates alone (no user, no request time)."""
        c = self.config
        id_emb = self._candidate_id_embedding(items)  # (N, d)
        enc = ItemEncoding(id_emb=id_emb, material_emb=self.material_embedding(items.material))
        if c.use_cdr or c.use_history_category:
            enc.category = items.category
        if c.use_multimodal:
            projections = {"text": self.text_proj, "visual": self.visual_proj}
            fake = self.dsn(id_emb) if self.dsn is not None else {}
            for m in c.content_modalities:
                setattr(enc, m, projections[m](getattr(items, f"{m}_emb")))  # (N, d)
                if m in fake:
                    setattr(enc, f"{m}_fake", fake[m])
        return enc

    def project_history(self, user: UserInputs) -> dict[str, Tensor]:
        """MIN's history in each content modality's projected space, (B, L, d) each."""
        modalities = self.config.content_modalities
        return self.project_content({m: getattr(user, f"seq_{m}_emb") for m in modalities})

    def project_content(self, embeddings: dict[str, Tensor | None]) -> dict[str, Tensor]:
        """{modality: (..., d)} projections of raw embeddings (..., modality width) as MIN
        reads them; {} without MIN. Serving projects its whole content table once."""
        if self.min is None:
            return {}
        projections = {"text": self.text_proj, "visual": self.visual_proj}
        return {m: projections[m](embeddings[m]) for m in self.config.content_modalities}

    def forward(self, user: UserInputs, items: CandidateInputs) -> dict[str, Tensor]:
        self.check_inputs(user, items)
        enc = self.encode_items(items)
        out = self.forward_encoded(
            user, enc, self.project_history(user), items.age_hours, items.ctr_windows
        )
        if self.dsn is not None:
            out["dsn_condition"] = enc.id_emb
            for m in self.config.content_modalities:
                out[f"dsn_real_{m}"] = getattr(enc, m)
                out[f"dsn_fake_{m}"] = getattr(enc, f"{m}_fake")
        return out

    def input_layout(self) -> list[tuple[str, int, str]]:
        """The MMoE input's column blocks in order, as (name, width, kind). Kind "user": one
        row per user, broadcast to the candidates; "item": the candidate alone (serving
        precomputes its share of the first layers per catalog, `item_first_layer`); "pair":
        the user x candidate part or the request time."""
        c, d = self.config, self.config.embed_dim
        modalities = c.content_modalities if c.use_multimodal else ()
        layout = [("position", c.context_dim, "user"), ("source", c.context_dim, "user")]
        if c.use_cdr:
            layout.append(("affinity", c.n_categories, "user"))
        layout += [("item_id", d, "item"), ("id_interest", d, "pair")]
        layout += [("material", c.context_dim, "item")]
        layout += [(m, d, "item") for m in modalities]
        if c.use_dsn:
            layout += [(f"{m}_residual", d, "item") for m in modalities]
        if c.use_min:
            layout.append(("min_fused", d, "pair"))
            if c.min_match:
                layout.append(("min_match", 1 + len(modalities), "pair"))
        if c.use_cdr:
            layout.append(("category_affinity", 1, "pair"))
        if c.use_timeliness:
            layout += [("age", 1, "pair"), ("ctr", c.n_ctr_windows, "item")]
        if c.use_history_category:
            layout += [("history_categories", c.n_categories, "user")]
            layout += [("history_category_share", 1, "pair")]
        if c.use_user_id:
            layout.append(("user_id", d, "user"))
            layout += [(f"user_x_{m}", d, "pair") for m in ("item_id", *modalities)]
        return layout

    def user_embedding(self, user_id: Tensor) -> Tensor:
        """(B, d) user-ID embeddings: zero for user_id -1 (not trained on) and, in training,
        for a random `user_id_dropout` share of the rows."""
        emb = self.user_id_embedding(user_id.clamp(min=0))
        keep = user_id >= 0
        if self.training and self.config.user_id_dropout > 0:
            keep = keep & (torch.rand(keep.shape, device=emb.device) >= self.config.user_id_dropout)
        return emb * keep.unsqueeze(1).to(emb.dtype)

    def _item_blocks(self, enc: ItemEncoding, ctr_windows: Tensor | None) -> dict[str, Tensor]:
        """The "item" blocks of the MMoE input, (N, width) each."""
        blocks = {"item_id": enc.id_emb, "material": enc.material_emb}
        for m in self.config.content_modalities if self.config.use_multimodal else ():
            blocks[m] = getattr(enc, m)
            if self.dsn is not None:
                blocks[f"{m}_residual"] = getattr(enc, m) - getattr(enc, f"{m}_fake")
        if self.config.use_timeliness:
            blocks["ctr"] = log_rate(ctr_windows) if self.config.log_rates else ctr_windows
        return blocks

    def split_first_layers(self) -> SplitFirstLayers:
        """The MMoE first layers' weights (experts, then gates) split by input kind."""
        with torch.no_grad():
            weight = torch.cat([layer.weight for layer in self.mmoe.first_layers()])  # (H, D)
            names: dict[str, list[str]] = {"user": [], "item": [], "pair": []}
            columns: dict[str, list[Tensor]] = {"user": [], "item": [], "pair": []}
            start = 0
            for name, width, kind in self.input_layout():
                names[kind].append(name)
                columns[kind].append(weight[:, start : start + width])
                start += width
            weights = {
                kind: torch.cat(parts, dim=1).T.contiguous() for kind, parts in columns.items()
            }
            return SplitFirstLayers(names, weights, self.mmoe.first_layer_bias().detach())

    def item_first_layer(
        self, enc: ItemEncoding, ctr_windows: Tensor | None, split: SplitFirstLayers
    ) -> Tensor:
        """(N, H): the "item" blocks' share of every MMoE first layer (no bias), for
        `forward_encoded(..., item_first_layer=..., split=split)`."""
        blocks = self._item_blocks(enc, ctr_windows)
        return (
            torch.cat([blocks[name] for name in split.names["item"]], dim=1) @ split.weights["item"]
        )

    def forward_encoded(
        self,
        user: UserInputs,
        enc: ItemEncoding,
        histories: dict[str, Tensor],
        age_hours: Tensor | None,
        ctr_windows: Tensor | None,
        item_first_layer: Tensor | None = None,
        split: SplitFirstLayers | None = None,
    ) -> dict[str, Tensor]:
        """Logits per task from encoded candidates (`encode_items`), the projected history
        (`project_history`) and the candidates' timeliness inputs; "min_weights" with MIN.
        With `item_first_layer` (the candidates' rows of `item_first_layer`) and the `split`
        it was made with, the "item" blocks are not multiplied again. Inputs are not checked
        here: `forward` checks them, serving builds them itself."""
        c = self.config
        n = enc.id_emb.shape[0]
        out: dict[str, Tensor] = {}
        history_id = self.item_id_embedding(user.seq_item_ids)  # (B, L, d)
        id_interest = self.id_attention(enc.id_emb, history_id, user.seq_mask)  # (N, d)
        blocks = {
            "position": self.position_embedding(user.position),
            "source": self.source_embedding(user.source),
            "id_interest": id_interest,
        }
        if item_first_layer is None:
            blocks.update(self._item_blocks(enc, ctr_windows))
        if self.min is not None:
            modalities = c.content_modalities
            real = {m: getattr(enc, m) for m in modalities}  # (N, d)
            user_parts = [masked_mean(history_id, user.seq_mask)] + [
                masked_mean(histories[m], user.seq_mask) for m in modalities
            ]
            if c.use_cdr:
                user_parts.append(user.category_affinity)
            user_vec = torch.cat(user_parts, dim=1)  # (B, (1 + M) d [+ n_categories])
            blocks["min_fused"], out["min_weights"], blocks["min_match"] = self.min(
                user_vec, enc.id_emb, id_interest, real, histories, user.seq_mask
            )
        if c.use_cdr:
            blocks["affinity"] = user.category_affinity
            blocks["category_affinity"] = _at_category(user.category_affinity, enc.category)
        if c.use_history_category:
            shares = category_shares(
                user.seq_category, user.seq_mask, c.n_categories, smoothed=c.log_rates
            )
            shares = log_rate(shares) if c.log_rates else shares
            blocks["history_categories"] = shares
            blocks["history_category_share"] = _at_category(shares, enc.category)
        if c.use_timeliness:
            blocks["age"] = torch.log1p(age_hours.clamp(min=0)).unsqueeze(1)  # (N, 1)
        if c.use_user_id:
            user_emb = self.user_embedding(user.user_id)  # (B, d)
            blocks["user_id"] = user_emb
            blocks["user_x_item_id"] = user_emb * enc.id_emb  # (N, d)
            for m in c.content_modalities if c.use_multimodal else ():
                blocks[f"user_x_{m}"] = user_emb * getattr(enc, m)

        if item_first_layer is None:
            x = torch.cat(
                [
                    blocks[name].expand(n, -1) if kind == "user" else blocks[name]
                    for name, _, kind in self.input_layout()
                ],
                dim=1,
            )  # (N, D)
            out.update(self.mmoe(x))
            return out
        split = split or self.split_first_layers()
        first = item_first_layer + split.bias
        for kind in ("user", "pair"):  # user rows (1, H) broadcast over the candidates
            inputs = torch.cat([blocks[name] for name in split.names[kind]], dim=1)
            first = first + inputs @ split.weights[kind]
        out.update(self.mmoe.forward_first_layer(first))
        return out


def category_shares(
    seq_category: Tensor, seq_mask: Tensor, n_categories: int, smoothed: bool = False
) -> Tensor:
    """(B, n_categories): each user's share of clicks per category over the history's items
    of known category (all zero without any). `smoothed`: half a click added to every
    category first, so no share is 0 and an empty history reads 1 / n_categories."""
    valid = (seq_category >= 0) & seq_mask  # (B, L)
    one_hot = F.one_hot(seq_category.clamp(min=0), n_categories).float() * valid.unsqueeze(-1)
    prior = 0.5 if smoothed else 0.0
    total = valid.sum(1, keepdim=True) + prior * n_categories
    return (one_hot.sum(1) + prior) / total.clamp(min=1)


def log_rate(rate: Tensor) -> Tensor:
    """A rate (a CTR, a share) as an MMoE input: its log, shifted by 2.5 so that typical
    values sit near 0 (a CTR of 0.08 and a share of 1/12 are both about e^-2.5); a floor of
    1e-3 keeps 0 finite."""
    return torch.log(rate.clamp(min=0) + 1e-3) + 2.5


def _at_category(per_category: Tensor, category: Tensor) -> Tensor:
    """(N, 1): each candidate's value of a (B, n_categories) user vector (B = 1 broadcasts)
    at its category; 0 for -1 (outside the data's category list)."""
    values = per_category.expand(category.shape[0], -1)  # a view
    picked = values.gather(1, category.clamp(min=0).unsqueeze(1))
    return picked * (category >= 0).unsqueeze(1).to(picked.dtype)


# ---------------------------------------------------------------------------------------------
# Loss


class RankingLoss(nn.Module):
    """Training wrapper: masked, pos-weighted BCE per task plus the DSN adversarial losses.

    forward(user, candidates, labels, label_masks) returns:
        "loss": scalar to backpropagate = loss_tasks + adversarial_weight * loss_gen_adv
            + loss_disc (the last two only with use_dsn);
        "loss_tasks": sum over tasks of task_weight * loss_{task};
        "loss_{task}": mean BCE over the task's unmasked rows (0 when none);
        "loss_gen_adv", "loss_disc": the generator's and discriminator's losses (use_dsn);
        "logits_{task}": the model's logits.
    Everything except "loss" is detached, for logging.
    """

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.model = model
        c = model.config
        self.register_buffer(
            "pos_weight",
            torch.tensor([c.pos_weight.get(t, 1.0) for t in c.tasks]),
            persistent=False,
        )
        self.task_weights = [c.task_weights.get(t, 1.0) for t in c.tasks]

    def dsn_losses(self, out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(loss_gen_adv, loss_disc) from a forward output with DSN internals.

        loss_gen_adv: BCE(D(fake), real) through frozen discriminator parameters; moves the
            generators (and through them the ID embeddings).
        loss_disc: BCE(D(real), real) + BCE(D(fake), fake) on detached inputs, halved; moves
            only the discriminators. Both are averaged over the content modalities.
        """
        dsn = self.model.dsn
        if dsn is None:
            raise ValueError("dsn_losses needs a model built with use_dsn=True")
        condition = out["dsn_condition"].detach()
        gen, disc = [], []
        for m in self.model.config.content_modalities:
            real, fake = out[f"dsn_real_{m}"], out[f"dsn_fake_{m}"]
            fooled = dsn.discriminate(m, condition, fake, frozen=True)
            gen.append(F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled)))
            on_real = dsn.discriminate(m, condition, real.detach())
            on_fake = dsn.discriminate(m, condition, fake.detach())
            disc.append(
                0.5 * F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
                + 0.5 * F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake))
            )
        return torch.stack(gen).mean(), torch.stack(disc).mean()

    def forward(
        self,
        user: UserInputs,
        items: CandidateInputs,
        labels: dict[str, Tensor],
        label_masks: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """
        Args:
            user, items: model inputs (see `RankingModel`).
            labels: {task: (N,) float in [0, 1]} for every task in the config; soft targets
                are allowed (e.g. watch ratio).
            label_masks: optional {task: (N,) bool}, True = the label is defined for the row.
                Tasks without a mask use every row.
        """
        c = self.model.config
        label_masks = label_masks or {}
        missing = [t for t in c.tasks if t not in labels]
        if missing:
            raise ValueError(f"labels lack tasks {missing}; give every task in config.tasks")
        unknown = set(label_masks) - set(c.tasks)
        if unknown:
            raise ValueError(f"label_masks name unknown tasks {sorted(unknown)}")
        out = self.model(user, items)
        n = items.item_id.shape[0]
        losses: dict[str, Tensor] = {}
        loss_tasks = out[f"logits_{c.tasks[0]}"].new_zeros(())
        for i, task in enumerate(c.tasks):
            target = check_tensor(f"labels[{task!r}]", labels[task], (n,), kind="float")
            per_row = F.binary_cross_entropy_with_logits(
                out[f"logits_{task}"], target, pos_weight=self.pos_weight[i], reduction="none"
            )
            mask = label_masks.get(task)
            if mask is None:
                task_loss = per_row.mean()
            else:
                check_tensor(f"label_masks[{task!r}]", mask, (n,), kind="bool")
                weights = mask.to(per_row.dtype)
                task_loss = (per_row * weights).sum() / weights.sum().clamp(min=1.0)
            losses[f"loss_{task}"] = task_loss
            loss_tasks = loss_tasks + self.task_weights[i] * task_loss
        loss = loss_tasks
        if self.model.dsn is not None:
            loss_gen_adv, loss_disc = self.dsn_losses(out)
            losses["loss_gen_adv"], losses["loss_disc"] = loss_gen_adv, loss_disc
            loss = loss + c.adversarial_weight * loss_gen_adv + loss_disc
        result = {name: value.detach() for name, value in losses.items()}
        result.update({k: v.detach() for k, v in out.items() if k.startswith("logits_")})
        result["loss_tasks"] = loss_tasks.detach()
        result["loss"] = loss
        return result


def ranking_parameter_groups(model: RankingModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(ranker parameters, discriminator parameters), for two optimizers in `train_step`."""
    disc_ids = {id(p) for p in model.discriminator_parameters()}
    ranker = [p for p in model.parameters() if id(p) not in disc_ids]
    return ranker, list(model.discriminator_parameters())


def train_step(
    loss_fn: RankingLoss,
    user: UserInputs,
    items: CandidateInputs,
    labels: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    disc_optimizer: torch.optim.Optimizer | None = None,
    label_masks: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """One step of the ranker and (with use_dsn) the adversarial game.

    One backward pass suffices because the generator's and the discriminator's losses touch
    disjoint parameters (see the module docstring). With `disc_optimizer`, `optimizer` holds
    the ranker parameters and `disc_optimizer` the discriminators' (`ranking_parameter_groups`);
    without it, `optimizer` holds all of them.

    Returns:
        every loss in the wrapper's output, as floats.
    """
    optimizers = [optimizer] + ([disc_optimizer] if disc_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    losses = loss_fn(user, items, labels, label_masks)
    losses["loss"].backward()
    for opt in optimizers:
        opt.step()
    return {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")}


# ---------------------------------------------------------------------------------------------
# Serving


def score_candidates(
    model: RankingModel, user: UserInputs, candidates: CandidateInputs
) -> dict[str, Tensor]:
    """Rank N candidates for ONE user in one forward pass, in eval mode.

    Args:
        user: a single row (B = 1); its sequence and context are computed once and broadcast
            to the candidates (target attention and the MMoE input expand views, the history
            is not copied N times).
        candidates: N rows.
    Returns:
        {task: probabilities (N,)} for every task in the config.
    """
    if user.seq_item_ids.dim() != 2 or user.seq_item_ids.shape[0] != 1:
        raise ValueError(
            f"score_candidates takes one user (seq_item_ids of shape (1, L)), got "
            f"{tuple(user.seq_item_ids.shape)}"
        )
    with inference(model):
        out = model(user, candidates)
    return {task: torch.sigmoid(out[f"logits_{task}"]) for task in model.config.tasks}


def score_encoded(
    model: RankingModel,
    user: UserInputs,
    enc: ItemEncoding,
    histories: dict[str, Tensor],
    age_hours: Tensor | None,
    ctr_windows: Tensor | None,
    item_first_layer: Tensor | None = None,
    split: SplitFirstLayers | None = None,
) -> dict[str, Tensor]:
    """`score_candidates` from candidates already encoded by `model.encode_items`, a history
    already projected by `model.project_history` and optionally the candidates' rows of
    `model.item_first_layer` (serving precomputes all three per catalog)."""
    with inference(model):
        out = model.forward_encoded(
            user, enc, histories, age_hours, ctr_windows, item_first_layer, split
        )
    return {task: torch.sigmoid(out[f"logits_{task}"]) for task in model.config.tasks}


__all__ = [
    "CandidateInputs",
    "ItemEncoding",
    "RankingConfig",
    "RankingLoss",
    "RankingModel",
    "SplitFirstLayers",
    "UserInputs",
    "category_shares",
    "log_rate",
    "ranking_parameter_groups",
    "score_candidates",
    "score_encoded",
    "train_step",
]
