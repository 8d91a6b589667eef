"""`RankingConfig`: the sizes, block switches and loss settings of the ranker
(models/ranking.py) and its loss (models/ranking_loss.py), and the versions of its stored form
(a model's config.json in the BentoML store, models/store.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

# RankingConfig's stored format: 5 = today's defaults (RankingConfig.upgrade_stored).
CONFIG_VERSION = 5
# The defaults each older version had where today's differ: a stored config that lacks such a
# field (saved before it existed) was trained with its own version's default, not today's.
OLDER_DEFAULTS: dict[int, dict[str, bool]] = {
    1: {"use_history_category": False, "log_rates": False, "min_match": False},
    2: {"use_popularity": False},  # on since issue #32's 3-seed ablations
    3: {"dsn_in_min": False},  # on since issue #32: frees the strong-taste world's plateau
    4: {"slow_item_ids": False},  # on since issue #32: +0.003 to +0.008 click AUC, 3 worlds
}


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
    # GMF's DSN: on (issue #32): on MovieLens-100k it adds 0.006-0.008 click AUC (3 seeds,
    # each seed above every seed without it); its residuals meet the user inside MIN
    # (dsn_in_min), as raw inputs they kept the strong-taste world on its early plateau.
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
    # The user's taste for popular items: the candidate's impressions in 1 and 7 days (the
    # world shows items by popularity), the mean log impressions of the history's items, and
    # their product (the user x item term a popularity-seeker's clicks follow). On since issue
    # #32: small world click AUC 0.721 -> 0.728 (3 seeds), MovieLens-100k 0.705 either way.
    use_popularity: bool = True
    # The talk's shared encoder: the recall item tower's vector of the candidate (the one the
    # vector index holds for the recall model the ranker records) and its match with the mean
    # vector of the history's items.
    use_recall_vector: bool = False
    recall_dim: int = 64  # the recall model's out_dim
    # With use_dsn, use_min and min_match (ignored otherwise): the DSN residual meets the user
    # inside MIN (its match with the user's pool in that modality, as MIN's match scores)
    # instead of entering the MMoE as a raw item block. On since issue #32 (3 seeds each): the
    # strong-taste world 0.743 -> 0.834 click AUC (every seed off the plateau), MovieLens-100k
    # 0.703 either way (0.697 without DSN), the small world 0.732 -> 0.734 (within noise).
    dsn_in_min: bool = True
    # The scalar inputs (rates, shares, counts, age) shifted and scaled by their train-split
    # mean and std (RankingModel.fit_scalar_inputs), so each enters the MMoE at unit scale.
    # Opt-in: measured within noise (issue #32, 3 seeds: small world click AUC +0.001,
    # MovieLens-100k -0.001 and cold items 0.685 -> 0.660).
    standardize: bool = False
    # Each scalar input as a piecewise-linear encoding over `scalar_bins` bins between its
    # train-split quantiles: one column per bin, 0 below it, 1 above it, linear inside
    # (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep Learning",
    # NeurIPS 2022): the step-like response a GBDT fits, within one layer's reach.
    bin_scalars: bool = False
    scalar_bins: int = 8
    # The candidate's ID embedding (`candidate_id`) and per-modality content projections
    # (`candidate_content`) as MMoE inputs of their own. ID attention and MIN read them either
    # way; off, the experts see that part of the candidate only through its match with the
    # user's history, and cannot memorize the candidate by it. Both on (issue #32, 3 seeds:
    # without the ID block MovieLens-100k 0.703 -> 0.688 click AUC; without the content blocks
    # one strong-taste seed of three stays on the plateau).
    candidate_id: bool = True
    candidate_content: bool = True
    # The item-ID table (candidate ID block, ID attention over the history, MIN's ID modality)
    # learns at `item_id_lr_scale` times the learning rate of the rest (an Adam parameter group
    # of its own, `ranking_parameter_groups`): at the full rate it memorizes the train days'
    # items within an epoch, while the content and taste blocks are still learning. On since
    # issue #32 (3 seeds each, test click AUC): MovieLens-100k 0.703 -> 0.711 (every seed above
    # every seed without), the small world 0.734 -> 0.737, the strong-taste world 0.834 ->
    # 0.835. Training-only: serving reads the weights, whatever their learning rate was.
    slow_item_ids: bool = True
    item_id_lr_scale: float = 0.1
    # Training-only probability of zeroing a candidate's ID embedding (the cold path).
    id_dropout: float = 0.1
    # Training-only probability of zeroing a user's embedding (the path of users unseen in
    # training, who are served with user_id -1).
    user_id_dropout: float = 0.1
    # BCE pos_weight per task (missing = 1.0); see models/ranking_loss.py on sparse labels.
    # Training sets them from the data's label rates (training/rank_train.py).
    pos_weight: dict[str, float] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=dict)  # missing = 1.0
    adversarial_weight: float = 0.1  # generator's adversarial loss in the total; small = stable
    seed: int = 0  # parameter initialisation seed (the global RNG is left untouched)
    # The stored config's format (`upgrade_stored`); a config saved without one is version 1.
    config_version: int = CONFIG_VERSION

    @property
    def residual_in_min(self) -> bool:
        """DSN's residuals meet the user inside MIN's match scores (dsn_in_min, where DSN, MIN
        and min_match are on); otherwise, with DSN, they enter the MMoE as raw item blocks."""
        return self.dsn_in_min and self.use_dsn and self.use_min and self.min_match

    @staticmethod
    def upgrade_stored(fields: dict[str, Any]) -> dict[str, Any]:
        """A stored config's fields in this version's terms: a field it lacks takes the default
        of its own version and the ones after it (OLDER_DEFAULTS), not today's. A config saved
        before configs carried a version is version 1."""
        version = fields.get("config_version", 1)
        if version > CONFIG_VERSION:
            raise ValueError(
                f"a ranking config of version {version}, newer than this code's "
                f"{CONFIG_VERSION}: upgrade mmrec to load the model"
            )
        for older in range(version, CONFIG_VERSION):
            fields = {**OLDER_DEFAULTS[older], **fields}
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
            "recall_dim": self.recall_dim,
        }
        if not 0 < self.item_id_lr_scale <= 1:
            raise ValueError(
                f"RankingConfig.item_id_lr_scale must be in (0, 1], got {self.item_id_lr_scale}"
            )
        if self.scalar_bins < 2:
            raise ValueError(f"RankingConfig.scalar_bins must be >= 2, got {self.scalar_bins}")
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
