"""Multi-task multimodal ranking (issue #5): MMoE over ID, multimodal, GMF, CDR and timeliness.

Scope: the PyTorch model over tensors and a one-user scoring function. Its inputs are
models/ranking_tensors.py's, its settings models/ranking_config.py's, its loss
models/ranking_loss.py's; serving's split of the first layers (the item side precomputed per
catalog) is serving/ranker_split.py. Feast training-set builders, training loops and
evaluation live elsewhere and talk to the model through `UserInputs`, `CandidateInputs` and
per-task label dicts.

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
- `use_history_category`: the click history's share per category and at the candidate's.
- `use_popularity`: the candidate's log impressions (1 and 7 days), the user's taste for
  popular items (the history items' mean log impressions) and the product of the two.
- `use_recall_vector` (the talk's shared encoder): the recall item tower's vector of the
  candidate (the one the vector index holds) and its dot product with the history's mean
  vector: recall and ranking read one item space.
- `dsn_in_min` (with DSN, MIN and min_match; the default): DSN's residuals are matched with
  the user's pools inside MIN instead of entering the MMoE as raw item blocks.

Cold start: a candidate with `is_cold` True gets an all-zero ID embedding, so it is ranked by
its modality projections (and DSN residuals, which become real - G(0)). During training
`id_dropout` zeroes the ID embedding of random candidates so the model learns that path.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from models.layers import (
    MLP,
    HashEmbedding,
    TargetAttention,
    inference,
    masked_mean,
    projection,
)
from models.ranking_config import RankingConfig
from models.ranking_tensors import CandidateInputs, ItemEncoding, UserInputs, check_inputs

# The MMoE input blocks computed from the data alone (no learned parameter): `standardize`
# shifts and scales them by their train-split mean and std.
SCALAR_BLOCKS = (
    "affinity", "category_affinity", "age", "ctr", "history_categories",
    "history_category_share", "popularity", "popularity_taste", "popularity_match",
)  # fmt: skip

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
        residuals: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            user_vec: (B, user_dim), B = 1 or N.
            id_query: (N, d) the candidate's ID embedding.
            id_pool: (N, d) the candidate's attention pool over the history in ID space.
            queries: {modality} -> (N, d) candidate projections.
            histories: {modality} -> (B, L, d) projected history.
            mask: (B, L) bool.
            residuals: {modality} -> (N, d) the candidate's DSN residuals (dsn_in_min), each
                matched with the modality's pool as the query is.
        Returns:
            fused (N, d), the interest weights (B, M) over ("id", *modalities), M <= 3, and
            the weighted matches (N, M [+ M - 1 with residuals]): w_m * <query_m, pool_m> /
            sqrt(d), then w_m * <residual_m, pool_m> / sqrt(d) per content modality.
        """
        weights = torch.softmax(self.interest(user_vec), dim=-1)  # (B, M)
        pools = [id_pool] + [
            self.attention[m](queries[m], histories[m], mask) for m in self.modalities
        ]
        stacked = torch.stack(pools, dim=1)  # (N, M, d)
        fused = (weights.unsqueeze(-1) * stacked).sum(1)  # (B, M, 1) * (N, M, d) -> (N, d)
        targets = torch.stack([id_query] + [queries[m] for m in self.modalities], dim=1)
        match = weights * (targets * stacked).sum(-1) / stacked.shape[-1] ** 0.5  # (N, M)
        if residuals is not None:
            residual = torch.stack([residuals[m] for m in self.modalities], dim=1)  # (N, M-1, d)
            residual_match = (residual * stacked[:, 1:]).sum(-1) / stacked.shape[-1] ** 0.5
            match = torch.cat([match, weights[:, 1:] * residual_match], dim=1)
        return fused, weights, match


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
            layout = self.input_layout()
            for name, width, _ in self._raw_layout():
                if c.standardize and name in SCALAR_BLOCKS:
                    self.register_buffer(f"shift_{name}", torch.zeros(width))
                    self.register_buffer(f"scale_{name}", torch.ones(width))
                if c.bin_scalars and name in SCALAR_BLOCKS:  # set by fit_scalar_inputs
                    edges = torch.linspace(-1.0, 1.0, c.scalar_bins + 1).repeat(width, 1)
                    self.register_buffer(f"edges_{name}", edges)  # (width, bins + 1)
            self._raw_scalars = False  # fit_scalar_inputs reads the blocks unencoded
            in_dim = sum(width for _, width, _ in layout)
            self.mmoe = MMoE(in_dim, c.tasks, c.n_experts, c.expert_dims, c.tower_dims, c.dropout)

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """The DSN discriminators' parameters (empty without use_dsn)."""
        if self.dsn is not None:
            yield from self.dsn.discriminators.parameters()

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
        if c.use_popularity:
            enc.popularity = log_count(items.popularity)  # (N, 2)
        if c.use_recall_vector:
            enc.recall_vector = items.recall_vector  # (N, recall_dim)
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
        check_inputs(self.config, user, items)
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
        precomputes its share of the first layers per catalog, serving/ranker_split.py); "pair":
        the user x candidate part or the request time. With `bin_scalars` a scalar block has
        one column per input column and bin."""
        c = self.config
        return [
            (
                name,
                width * c.scalar_bins if c.bin_scalars and name in SCALAR_BLOCKS else width,
                kind,
            )
            for name, width, kind in self._raw_layout()
        ]

    def _raw_layout(self) -> list[tuple[str, int, str]]:
        """`input_layout` before the scalar blocks' piecewise-linear encoding."""
        c, d = self.config, self.config.embed_dim
        modalities = c.content_modalities if c.use_multimodal else ()
        layout = [("position", c.context_dim, "user"), ("source", c.context_dim, "user")]
        if c.use_cdr:
            layout.append(("affinity", c.n_categories, "user"))
        if c.candidate_id:
            layout.append(("item_id", d, "item"))
        layout += [("id_interest", d, "pair"), ("material", c.context_dim, "item")]
        if c.candidate_content:
            layout += [(m, d, "item") for m in modalities]
        if c.use_dsn and not c.residual_in_min:
            layout += [(f"{m}_residual", d, "item") for m in modalities]
        if c.use_min:
            layout.append(("min_fused", d, "pair"))
            if c.min_match:
                width = 1 + len(modalities) + (len(modalities) if c.residual_in_min else 0)
                layout.append(("min_match", width, "pair"))
        if c.use_cdr:
            layout.append(("category_affinity", 1, "pair"))
        if c.use_timeliness:
            layout += [("age", 1, "pair"), ("ctr", c.n_ctr_windows, "item")]
        if c.use_history_category:
            layout += [("history_categories", c.n_categories, "user")]
            layout += [("history_category_share", 1, "pair")]
        if c.use_popularity:
            layout += [("popularity", 2, "item"), ("popularity_taste", 2, "user")]
            layout += [("popularity_match", 1, "pair")]
        if c.use_recall_vector:
            layout += [("recall_vector", c.recall_dim, "item"), ("recall_match", 1, "pair")]
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

    def item_blocks(self, enc: ItemEncoding, ctr_windows: Tensor | None) -> dict[str, Tensor]:
        """The "item" blocks of the MMoE input, (N, width) each: what depends on the candidate
        alone."""
        c = self.config
        blocks = {"item_id": enc.id_emb, "material": enc.material_emb}
        for m in c.content_modalities if c.use_multimodal else ():
            blocks[m] = getattr(enc, m)
            if self.dsn is not None and not c.residual_in_min:
                blocks[f"{m}_residual"] = self.residual(enc, m)
        if c.use_timeliness:
            blocks["ctr"] = log_rate(ctr_windows) if c.log_rates else ctr_windows
        if c.use_popularity:
            blocks["popularity"] = enc.popularity
        if c.use_recall_vector:
            blocks["recall_vector"] = enc.recall_vector
        return self._encoded_scalars(blocks)

    def _encoded_scalars(self, blocks: dict[str, Tensor]) -> dict[str, Tensor]:
        """`blocks` with each scalar block shifted and scaled by its train-split mean and std
        (`standardize`; identity until `fit_scalar_inputs`), then piecewise-linear encoded
        (`bin_scalars`)."""
        c = self.config
        if not (c.standardize or c.bin_scalars) or self._raw_scalars:
            return blocks
        out = {}
        for name, x in blocks.items():
            if name in SCALAR_BLOCKS and c.standardize:
                x = (x - getattr(self, f"shift_{name}")) / getattr(self, f"scale_{name}")
            if name in SCALAR_BLOCKS and c.bin_scalars:
                x = piecewise_linear(x, getattr(self, f"edges_{name}"))
            out[name] = x
        return out

    @torch.no_grad()
    def fit_scalar_inputs(self, user: UserInputs, items: CandidateInputs) -> None:
        """Set the scalar blocks' shifts and scales to their means and stds over a sample of
        training rows (one row per impression, B = N; a constant column keeps scale 1), and
        with `bin_scalars` their bin edges to the sample's quantiles (after the scaling)."""
        c = self.config
        if not (c.standardize or c.bin_scalars):
            return
        was_training = self.training
        self.eval()
        self._raw_scalars = True
        try:
            enc = self.encode_items(items)
            blocks, _ = self.input_blocks(
                user, enc, self.project_history(user), items.age_hours, items.ctr_windows
            )
        finally:
            self._raw_scalars = False
            self.train(was_training)
        levels = torch.linspace(0.0, 1.0, c.scalar_bins + 1)
        for name, x in blocks.items():
            if name not in SCALAR_BLOCKS:
                continue
            if c.standardize:
                std = x.std(0)
                shift, scale = x.mean(0), torch.where(std > 1e-6, std, 1.0)
                getattr(self, f"shift_{name}").copy_(shift)
                getattr(self, f"scale_{name}").copy_(scale)
                x = (x - shift) / scale  # the edges are fitted where `_encoded_scalars` bins
            if c.bin_scalars:
                getattr(self, f"edges_{name}").copy_(torch.quantile(x.float(), levels, dim=0).T)

    @staticmethod
    def residual(enc: ItemEncoding, modality: str) -> Tensor:
        """(N, d) DSN's residual of one modality: the real projection minus the generated."""
        return getattr(enc, modality) - getattr(enc, f"{modality}_fake")

    def forward_encoded(
        self,
        user: UserInputs,
        enc: ItemEncoding,
        histories: dict[str, Tensor],
        age_hours: Tensor | None,
        ctr_windows: Tensor | None,
    ) -> dict[str, Tensor]:
        """Logits per task from encoded candidates (`encode_items`), the projected history
        (`project_history`) and the candidates' timeliness inputs; "min_weights" with MIN.
        Inputs are not checked here: `forward` checks them."""
        blocks, out = self.input_blocks(user, enc, histories, age_hours, ctr_windows)
        n = enc.id_emb.shape[0]
        x = torch.cat(
            [
                blocks[name].expand(n, -1) if kind == "user" else blocks[name]
                for name, _, kind in self.input_layout()
            ],
            dim=1,
        )  # (N, D)
        out.update(self.mmoe(x))
        return out

    def input_blocks(
        self,
        user: UserInputs,
        enc: ItemEncoding,
        histories: dict[str, Tensor],
        age_hours: Tensor | None,
        ctr_windows: Tensor | None,
        item_side: bool = True,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The MMoE input's blocks by name, as `input_layout` lists them ("user" blocks (B,
        width), the others (N, width)), and the outputs besides the logits ("min_weights" with
        MIN). `item_side=False` leaves the "item" blocks out (serving/ranker_split.py has
        their share of the first layers precomputed; `ctr_windows` may then be None)."""
        c = self.config
        out: dict[str, Tensor] = {}
        history_id = self.item_id_embedding(user.seq_item_ids)  # (B, L, d)
        id_interest = self.id_attention(enc.id_emb, history_id, user.seq_mask)  # (N, d)
        blocks = {
            "position": self.position_embedding(user.position),
            "source": self.source_embedding(user.source),
            "id_interest": id_interest,
        }
        if self.min is not None:
            modalities = c.content_modalities
            real = {m: getattr(enc, m) for m in modalities}  # (N, d)
            user_parts = [masked_mean(history_id, user.seq_mask)] + [
                masked_mean(histories[m], user.seq_mask) for m in modalities
            ]
            if c.use_cdr:
                user_parts.append(user.category_affinity)
            user_vec = torch.cat(user_parts, dim=1)  # (B, (1 + M) d [+ n_categories])
            residuals = (
                {m: self.residual(enc, m) for m in modalities} if c.residual_in_min else None
            )
            blocks["min_fused"], out["min_weights"], blocks["min_match"] = self.min(
                user_vec, enc.id_emb, id_interest, real, histories, user.seq_mask, residuals
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
        if c.use_popularity:
            taste = popularity_taste(user.seq_popularity, user.seq_mask)  # (B, 2)
            blocks["popularity_taste"] = taste
            # the user x item product: the history's mean log popularity x the candidate's (7d)
            blocks["popularity_match"] = taste[:, :1] * enc.popularity[:, 1:]  # (N, 1)
        if c.use_recall_vector:
            history = masked_mean(user.seq_recall_vector, user.seq_mask)  # (B, recall_dim)
            blocks["recall_match"] = (enc.recall_vector * history).sum(1, keepdim=True)  # (N, 1)
        if c.use_user_id:
            user_emb = self.user_embedding(user.user_id)  # (B, d)
            blocks["user_id"] = user_emb
            blocks["user_x_item_id"] = user_emb * enc.id_emb  # (N, d)
            for m in c.content_modalities if c.use_multimodal else ():
                blocks[f"user_x_{m}"] = user_emb * getattr(enc, m)
        blocks = self._encoded_scalars(blocks)
        if item_side:  # standardized by item_blocks itself (serving calls it alone)
            blocks.update(self.item_blocks(enc, ctr_windows))
        return blocks, out


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


def piecewise_linear(x: Tensor, edges: Tensor) -> Tensor:
    """(N, W) -> (N, W * T): each column over its T bins (`edges` (W, T + 1), ascending), per
    bin (x - lower) / width clipped to [0, 1], the first bin unclipped below and the last
    above (so values outside the fitted range extrapolate); columns major, bins minor. A bin
    of zero width (a repeated quantile: a flag, a mode) is a step at its edge. Hand-written:
    PyTorch has no such layer."""
    lower, width = edges[:, :-1], edges[:, 1:] - edges[:, :-1]  # (W, T)
    ratio = (x.unsqueeze(-1) - lower) / width.clamp(min=1e-6)  # (N, W, T)
    bins = torch.arange(width.shape[1], device=x.device)
    real = width > 1e-6  # a step is clipped on both sides
    low = torch.where((bins == 0) & real, -torch.inf, 0.0).to(x.dtype)
    high = torch.where((bins == bins[-1]) & real, torch.inf, 1.0).to(x.dtype)
    return torch.maximum(torch.minimum(ratio, high), low).flatten(1)


def log_rate(rate: Tensor) -> Tensor:
    """A rate (a CTR, a share) as an MMoE input: its log, shifted by 2.5 so that typical
    values sit near 0 (a CTR of 0.08 and a share of 1/12 are both about e^-2.5); a floor of
    1e-3 keeps 0 finite."""
    return torch.log(rate.clamp(min=0) + 1e-3) + 2.5


# log1p(impressions) - 3: an item shown about e^3 = 20 times sits near 0
POPULARITY_SHIFT = 3.0


def log_count(count: Tensor) -> Tensor:
    """A count (impressions) as an MMoE input: log1p, shifted so typical values sit near 0."""
    return torch.log1p(count.clamp(min=0)) - POPULARITY_SHIFT


def popularity_taste(seq_popularity: Tensor, seq_mask: Tensor) -> Tensor:
    """(B, 2): the mean `log_count` of the history items' impressions (0 without history)
    and a flag for "no history" (so that 0 does not read as a taste)."""
    taste = masked_mean(log_count(seq_popularity).unsqueeze(-1), seq_mask)  # (B, 1)
    empty = (~seq_mask.any(1, keepdim=True)).to(taste.dtype)
    return torch.cat([taste, empty], dim=1)


def _at_category(per_category: Tensor, category: Tensor) -> Tensor:
    """(N, 1): each candidate's value of a (B, n_categories) user vector (B = 1 broadcasts)
    at its category; 0 for -1 (outside the data's category list)."""
    values = per_category.expand(category.shape[0], -1)  # a view
    picked = values.gather(1, category.clamp(min=0).unsqueeze(1))
    return picked * (category >= 0).unsqueeze(1).to(picked.dtype)


# ---------------------------------------------------------------------------------------------
# Scoring


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


__all__ = [
    "DSNResidual",
    "MMoE",
    "ModalityInterest",
    "RankingModel",
    "category_shares",
    "log_count",
    "log_rate",
    "popularity_taste",
    "score_candidates",
]
