"""Behaviour of the multi-task ranking model (models/ranking.py) on tiny tensors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mmrec.vocab import RANKING_TASKS
from models.ranking import (
    SCALAR_BLOCKS,
    ModalityInterest,
    RankingModel,
    category_shares,
    log_rate,
    piecewise_linear,
    score_candidates,
)
from models.ranking_config import RankingConfig
from models.ranking_loss import RankingLoss, ranking_parameter_groups, train_step
from models.ranking_tensors import CandidateInputs, UserInputs
from serving.ranker_split import item_first_layer, score_encoded, split_first_layers

TINY = RankingConfig(
    n_item_buckets=2048,
    embed_dim=8,
    text_dim=16,
    visual_dim=12,
    context_dim=4,
    n_ctr_windows=3,
    attention_hidden=16,
    n_experts=2,
    expert_dims=(16,),
    tower_dims=(8,),
    recall_dim=6,
)
ALL_OFF = {
    "use_multimodal": False,
    "use_dsn": False,
    "use_min": False,
    "use_cdr": False,
    "use_timeliness": False,
    "use_history_category": False,
    "use_user_id": False,
    "min_match": False,
    "use_popularity": False,
    "use_recall_vector": False,
    "dsn_in_min": False,
    "standardize": False,
    "bin_scalars": False,
}
ID_ONLY = replace(TINY, **ALL_OFF)
SWITCH_CASES = {
    "id-only": {},
    "multimodal": {"use_multimodal": True},
    "dsn": {"use_multimodal": True, "use_dsn": True},
    "min": {"use_multimodal": True, "use_min": True},
    "min_match": {"use_multimodal": True, "use_min": True, "min_match": True},
    "min+cdr": {"use_multimodal": True, "use_min": True, "use_cdr": True},
    "cdr": {"use_cdr": True},
    "timeliness": {"use_timeliness": True},
    "history_category": {"use_history_category": True},
    "user_id": {"use_multimodal": True, "use_user_id": True},
    "popularity": {"use_popularity": True},
    "recall_vector": {"use_recall_vector": True},
    "dsn_in_min": {"use_multimodal": True, "use_dsn": True, "use_min": True, "dsn_in_min": True},
    "standardize": {
        "use_cdr": True,
        "use_timeliness": True,
        "use_history_category": True,
        "use_popularity": True,
        "standardize": True,
    },
    "scalar_bins": {
        "use_cdr": True,
        "use_timeliness": True,
        "use_history_category": True,
        "use_popularity": True,
        "bin_scalars": True,
        "scalar_bins": 4,
    },
    "no_candidate_id_or_content": {
        "use_multimodal": True,
        "use_dsn": True,
        "use_min": True,
        "min_match": True,
        "dsn_in_min": True,
        "candidate_id": False,
        "candidate_content": False,
    },
    "all": {k: True for k in ALL_OFF},
}


def random_user(b: int, length: int = 5, config: RankingConfig = TINY, seed: int = 0) -> UserInputs:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, length, generator=g) < 0.8
    mask[0, 0] = True
    if b > 1:
        mask[1] = False  # a user without history
    return UserInputs(
        seq_item_ids=torch.randint(0, 1000, (b, length), generator=g),
        seq_mask=mask,
        position=torch.randint(0, config.n_positions, (b,), generator=g),
        source=torch.randint(0, config.n_sources, (b,), generator=g),
        category_affinity=torch.rand(b, config.n_categories, generator=g),
        seq_text_emb=torch.randn(b, length, config.text_dim, generator=g),
        seq_visual_emb=torch.randn(b, length, config.visual_dim, generator=g),
        user_id=torch.randint(-1, 50, (b,), generator=g),  # -1: a user unseen in training
        seq_category=torch.where(
            mask, torch.randint(-1, config.n_categories, (b, length), generator=g), -1
        ),
        seq_popularity=torch.where(
            mask, torch.randint(0, 500, (b, length), generator=g), 0
        ).float(),
        seq_recall_vector=torch.randn(b, length, config.recall_dim, generator=g)
        * mask.unsqueeze(-1),
    )


def random_candidates(n: int, config: RankingConfig = TINY, seed: int = 1) -> CandidateInputs:
    g = torch.Generator().manual_seed(seed)
    return CandidateInputs(
        item_id=torch.randint(0, 1000, (n,), generator=g),
        material=torch.randint(0, config.n_materials, (n,), generator=g),
        category=torch.randint(0, config.n_categories, (n,), generator=g),
        text_emb=torch.randn(n, config.text_dim, generator=g),
        visual_emb=torch.randn(n, config.visual_dim, generator=g),
        age_hours=torch.rand(n, generator=g) * 200,
        ctr_windows=torch.rand(n, config.n_ctr_windows, generator=g) * 0.1,
        is_cold=torch.rand(n, generator=g) < 0.2,
        popularity=torch.randint(0, 500, (n, 2), generator=g).float(),
        recall_vector=torch.randn(n, config.recall_dim, generator=g),
    )


def random_labels(
    n: int, tasks: tuple[str, ...] = RANKING_TASKS, seed: int = 2
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: (torch.rand(n, generator=g) < 0.4).float() for t in tasks}


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given their average rank."""
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    _, inverse = scores.unique(return_inverse=True)
    rank_sums = torch.zeros(int(inverse.max()) + 1).scatter_add_(0, inverse, ranks)
    ranks = (rank_sums / torch.bincount(inverse).to(scores.dtype))[inverse]  # tied: mean rank
    positive = labels > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_binary_auc_matches_hand_counted_pairs() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    # positive/negative pairs: (0.35>0.1), (0.35<0.4), (0.8>both), (0.4>0.1), (0.4=0.4 -> 1/2)
    assert binary_auc(scores, labels) == pytest.approx(4.5 / 6)


# ---------------------------------------------------------------------------------------------
# Shapes, gradients, switches


def test_forward_returns_logits_per_task_and_gmf_internals() -> None:
    model = RankingModel(TINY)
    out = model(random_user(6), random_candidates(6))
    for task in RANKING_TASKS:
        assert out[f"logits_{task}"].shape == (6,)
    for m in ("text", "visual"):
        assert out[f"dsn_real_{m}"].shape == out[f"dsn_fake_{m}"].shape == (6, TINY.embed_dim)
    assert out["min_weights"].shape == (6, 1 + len(TINY.content_modalities))  # ID + content
    torch.testing.assert_close(out["min_weights"].sum(1), torch.ones(6))


@pytest.mark.parametrize("switches", list(SWITCH_CASES.values()), ids=list(SWITCH_CASES))
def test_each_switch_runs_forward_backward_and_trains_every_parameter(switches: dict) -> None:
    config = replace(ID_ONLY, **switches)
    model = RankingModel(config)
    user, items = random_user(8), random_candidates(8)
    if not config.use_multimodal:  # inputs a disabled block reads may be left out
        items = replace(items, text_emb=None, visual_emb=None)
        user = replace(user, seq_text_emb=None, seq_visual_emb=None)
    losses = RankingLoss(model)(user, items, random_labels(8))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} got no gradient"
    assert (model.text_proj is not None) == config.use_multimodal
    assert (model.dsn is not None) == config.use_dsn
    assert (model.min is not None) == config.use_min
    assert ("loss_disc" in losses) == config.use_dsn


def test_loss_falls_on_a_small_batch() -> None:
    torch.manual_seed(0)
    n = 64
    user, items = random_user(n, seed=3), random_candidates(n, seed=4)
    labels = random_labels(n, seed=5)
    loss_fn = RankingLoss(RankingModel(TINY))
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    history = [train_step(loss_fn, user, items, labels, optimizer)["loss_tasks"] for _ in range(80)]
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history


# ---------------------------------------------------------------------------------------------
# Loss details


def test_label_mask_leaves_undefined_labels_out() -> None:
    model = RankingModel(replace(TINY, id_dropout=0.0)).eval()
    loss_fn = RankingLoss(model)
    user, items, labels = random_user(6), random_candidates(6), random_labels(6)
    watch_defined = torch.tensor([True, True, True, False, False, False])
    base = loss_fn(user, items, labels, {"watch": watch_defined})
    flipped = dict(labels, watch=torch.where(watch_defined, labels["watch"], 1 - labels["watch"]))
    again = loss_fn(user, items, flipped, {"watch": watch_defined})
    torch.testing.assert_close(again["loss_watch"], base["loss_watch"])
    unmasked = loss_fn(user, items, flipped)
    assert not torch.allclose(unmasked["loss_watch"], base["loss_watch"])
    none = loss_fn(user, items, labels, {"watch": torch.zeros(6, dtype=torch.bool)})
    assert float(none["loss_watch"]) == 0.0


def test_pos_weight_scales_positive_rows_and_task_weight_scales_the_task() -> None:
    config = replace(TINY, pos_weight={"share": 10.0}, task_weights={"click": 0.0}, id_dropout=0.0)
    weighted = RankingLoss(RankingModel(config).eval())
    plain = RankingLoss(RankingModel(replace(config, pos_weight={}, task_weights={})).eval())
    user, items = random_user(5), random_candidates(5)
    labels = {t: torch.ones(5) for t in RANKING_TASKS}
    a, b = weighted(user, items, labels), plain(user, items, labels)
    torch.testing.assert_close(a["loss_share"], 10 * b["loss_share"])
    torch.testing.assert_close(a["loss_cart"], b["loss_cart"])
    expected = sum(a[f"loss_{t}"] for t in RANKING_TASKS if t != "click")
    torch.testing.assert_close(a["loss_tasks"], expected)


def test_dsn_losses_are_finite_and_each_moves_only_its_own_player() -> None:
    model = RankingModel(TINY)
    loss_fn = RankingLoss(model)
    out = model(random_user(8), random_candidates(8))
    loss_gen_adv, loss_disc = loss_fn.dsn_losses(out)
    assert torch.isfinite(loss_gen_adv) and torch.isfinite(loss_disc)

    generators = list(model.dsn.generators.parameters())
    discriminators = list(model.discriminator_parameters())
    gen_grads = torch.autograd.grad(loss_gen_adv, generators + discriminators, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in gen_grads[: len(generators)])
    assert all(g is None for g in gen_grads[len(generators) :])
    disc_grads = torch.autograd.grad(loss_disc, generators + discriminators, allow_unused=True)
    assert all(g is None for g in disc_grads[: len(generators)])
    assert all(g is not None and g.abs().sum() > 0 for g in disc_grads[len(generators) :])


def test_adversarial_train_step_changes_generator_and_discriminator() -> None:
    model = RankingModel(TINY)
    ranker_groups, disc_params = ranking_parameter_groups(model, lr=1e-2)
    assert {id(p) for p in disc_params} == {id(p) for p in model.discriminator_parameters()}
    n_ranker = sum(len(g["params"]) for g in ranker_groups)
    assert n_ranker + len(disc_params) == len(list(model.parameters()))
    optimizer = torch.optim.Adam(ranker_groups)
    disc_optimizer = torch.optim.Adam(disc_params, lr=1e-3)
    before = {k: v.clone() for k, v in model.dsn.state_dict().items()}
    user, items = random_user(8), random_candidates(8)
    losses = train_step(
        RankingLoss(model), user, items, random_labels(8), optimizer, disc_optimizer
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = model.dsn.state_dict()
    for prefix in ("generators.text", "generators.visual", "discriminators.text"):
        changed = [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]
        assert changed and all(changed), prefix


def test_slow_item_ids_train_the_id_table_at_the_scaled_rate_and_the_rest_at_the_full_one() -> None:
    """Adam's first step moves each parameter by about its group's lr: the ID table's rows a
    batch touched by lr * item_id_lr_scale, the other layers by lr."""
    lr, scale = 1e-2, 0.1
    model = RankingModel(replace(TINY, slow_item_ids=True, item_id_lr_scale=scale))
    groups, disc_params = ranking_parameter_groups(model, lr)
    table = model.item_id_embedding.table.weight
    assert [g["lr"] for g in groups] == [lr, lr * scale]
    assert [id(p) for p in groups[1]["params"]] == [id(table)]
    n_grouped = sum(len(g["params"]) for g in groups) + len(disc_params)
    assert n_grouped == len(list(model.parameters()))
    params = [table, *groups[0]["params"]]
    before = [p.detach().clone() for p in params]
    user, items = random_user(8), random_candidates(8)
    train_step(
        RankingLoss(model), user, items, random_labels(8), torch.optim.Adam(groups),
        torch.optim.Adam(disc_params, lr=1e-3),
    )  # fmt: skip
    steps = [(p.detach() - b).abs().max() for p, b in zip(params, before, strict=True)]
    torch.testing.assert_close(steps[0], torch.tensor(lr * scale), rtol=0.05, atol=0)
    torch.testing.assert_close(max(steps[1:]), torch.tensor(lr), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="item_id_lr_scale"):
        replace(TINY, item_id_lr_scale=0.0)
    plain, _ = ranking_parameter_groups(RankingModel(replace(TINY, slow_item_ids=False)), lr)
    assert [g["lr"] for g in plain] == [lr]  # one group: the ID table learns at lr


# ---------------------------------------------------------------------------------------------
# Cold start and scoring


def test_cold_candidates_ignore_their_id_and_id_dropout_only_acts_in_training() -> None:
    model = RankingModel(replace(TINY, id_dropout=0.5))
    user = random_user(1)
    items = replace(random_candidates(4), is_cold=torch.tensor([True, True, False, False]))
    relabelled = replace(items, item_id=items.item_id + 17)
    model.eval()
    a, b = model(user, items), model(user, relabelled)
    torch.testing.assert_close(a["logits_click"][:2], b["logits_click"][:2])
    assert not torch.allclose(a["logits_click"][2:], b["logits_click"][2:])
    torch.testing.assert_close(model(user, items)["logits_click"], a["logits_click"])
    model.train()
    torch.manual_seed(0)
    draws = torch.stack([model(user, items)["logits_click"] for _ in range(8)])
    assert not torch.allclose(draws[:, 2:], draws[:1, 2:].expand(8, -1))


def test_min_match_is_the_interest_weighted_dot_product_with_each_pool() -> None:
    torch.manual_seed(0)
    d, n = 8, 5
    block = ModalityInterest(user_dim=3 * d, dim=d, hidden=16, modalities=("text", "visual"))
    user_vec = torch.randn(1, 3 * d)
    id_query, id_pool = torch.randn(n, d), torch.randn(n, d)
    queries = {m: torch.randn(n, d) for m in ("text", "visual")}
    histories = {m: torch.randn(1, 1, d) for m in ("text", "visual")}  # one clicked item
    mask = torch.ones(1, 1, dtype=torch.bool)
    _, weights, match = block(user_vec, id_query, id_pool, queries, histories, mask)
    # a one-item history's attention pool is that item's vector
    dots = torch.stack(
        [(id_query * id_pool).sum(1)]
        + [queries[m] @ histories[m][0, 0] for m in ("text", "visual")],
        dim=1,
    )
    torch.testing.assert_close(match, weights * dots / d**0.5)
    without_min = RankingModel(replace(TINY, use_min=False, min_match=True))
    assert "min_match" not in [name for name, _, _ in without_min.input_layout()]


@pytest.mark.parametrize("off", [{"use_dsn": False}, {"use_min": False}, {"min_match": False}])
def test_dsn_in_min_falls_back_to_raw_residual_blocks_without_what_it_needs(
    off: dict[str, bool],
) -> None:
    """`dsn_in_min` without DSN, MIN or MIN's match scores is ignored (the model is the one
    built without it and scores), so `--no-dsn` needs no `--no-dsn-in-min`."""
    config = replace(TINY, dsn_in_min=True, **off)
    assert not config.residual_in_min
    with_switch, without = RankingModel(config), RankingModel(replace(config, dsn_in_min=False))
    assert with_switch.input_layout() == without.input_layout()
    with torch.no_grad():
        out = with_switch.eval()(random_user(4), random_candidates(4))
    assert torch.isfinite(out["logits_click"]).all()
    assert replace(TINY, dsn_in_min=True).residual_in_min


def test_history_category_shares_count_known_clicks_only() -> None:
    seq_category = torch.tensor([[0, 0, 2, -1, 1], [-1, -1, 3, 3, 3]])
    mask = torch.tensor([[True, True, True, True, False], [False, False, False, False, False]])
    shares = category_shares(seq_category, mask, 4)
    torch.testing.assert_close(shares[0], torch.tensor([2 / 3, 0.0, 1 / 3, 0.0]))
    assert shares[1].sum() == 0  # no history: no interest, not a uniform one
    smoothed = category_shares(seq_category, mask, 4, smoothed=True)
    torch.testing.assert_close(smoothed[0], torch.tensor([2.5, 0.5, 1.5, 0.5]) / 5)
    torch.testing.assert_close(smoothed[1], torch.full((4,), 0.25))  # no history: uniform


def test_log_rates_feed_logs_of_ctrs_and_shares_to_the_first_layers() -> None:
    rates = torch.tensor([0.0, 1 / 12, 0.08, 1.0])
    torch.testing.assert_close(log_rate(rates), torch.log(rates + 1e-3) + 2.5)
    assert log_rate(torch.tensor([-0.5])).isfinite().all()  # a bad negative rate reads as 0
    user, candidates = random_user(1, length=8), random_candidates(6)
    config = replace(TINY, use_history_category=True, log_rates=False)
    raw, logged = RankingModel(config), RankingModel(replace(config, log_rates=True))
    logged.load_state_dict(raw.state_dict())  # same weights: only the inputs differ
    for model in (raw, logged):
        model.eval()
    with torch.no_grad():
        user6 = user.take(torch.zeros(6, dtype=torch.long))
        a, b = raw(user6, candidates), logged(user6, candidates)
    assert not torch.allclose(a["logits_click"], b["logits_click"])


def test_scoring_500_candidates_for_one_user_matches_per_row_scoring() -> None:
    model = RankingModel(TINY)
    user, candidates = random_user(1, length=8), random_candidates(500)
    probs = score_candidates(model, user, candidates)
    assert model.training  # restored
    assert set(probs) == set(RANKING_TASKS)
    model.eval()
    with torch.no_grad():
        per_row = model(user.take(torch.zeros(500, dtype=torch.long)), candidates)
    for task in RANKING_TASKS:
        assert probs[task].shape == (500,)
        torch.testing.assert_close(probs[task], torch.sigmoid(per_row[f"logits_{task}"]))


@pytest.mark.parametrize("switches", list(SWITCH_CASES.values()), ids=list(SWITCH_CASES))
def test_precomputed_item_side_scores_as_the_full_forward_pass(switches: dict) -> None:
    """Serving's split (items encoded and their first-layer share computed once per catalog,
    the rest per request) gives the full forward pass's scores, for every block switch."""
    model = RankingModel(replace(TINY, **{**ALL_OFF, **switches}))
    user, candidates = random_user(1, length=6, config=model.config), random_candidates(300)
    candidates.is_cold = torch.rand(300) < 0.2
    training = random_candidates(64, seed=5)
    model.fit_scalar_inputs(random_user(64, 6, model.config, seed=4), training)
    want = score_candidates(model, user, candidates)
    model.eval()
    split = split_first_layers(model)
    with torch.no_grad():
        catalog = model.encode_items(candidates)  # the catalog, encoded once
        first = item_first_layer(model, catalog, candidates.ctr_windows, split)
        rows = torch.randperm(300)[:120]  # one request's candidates
        got = score_encoded(
            model,
            user,
            catalog.take(rows),
            model.project_history(user),
            candidates.age_hours[rows],
            first[rows],
            split,
        )
    for task in RANKING_TASKS:
        torch.testing.assert_close(got[task], want[task][rows], atol=1e-5, rtol=0)


def planted_cold_start(seed: int, n_users: int = 64, n_latent: int = 4):
    """Users like one latent category; an item's category shows only in its text and visual
    embeddings. Train on items 0..199; test on items 1000..1099 whose IDs never appear."""
    g = torch.Generator().manual_seed(seed)
    text_centroids = F.normalize(torch.randn(n_latent, TINY.text_dim, generator=g), dim=1)
    visual_centroids = F.normalize(torch.randn(n_latent, TINY.visual_dim, generator=g), dim=1)
    user_category = torch.arange(n_users) % n_latent

    def items(ids: torch.Tensor) -> tuple[CandidateInputs, torch.Tensor]:
        n = len(ids)
        category = torch.randint(0, n_latent, (n,), generator=g)
        inputs = CandidateInputs(
            item_id=ids,
            material=torch.zeros(n, dtype=torch.long),
            text_emb=text_centroids[category] + 0.3 * torch.randn(n, TINY.text_dim, generator=g),
            visual_emb=visual_centroids[category]
            + 0.3 * torch.randn(n, TINY.visual_dim, generator=g),
        )
        return inputs, category

    train_items, train_category = items(torch.arange(200))
    test_items, test_category = items(torch.arange(1000, 1100))

    # Each user's history: 6 training items of its category, with their embeddings.
    members = [torch.nonzero(train_category == c).squeeze(1) for c in range(n_latent)]
    history = torch.stack(
        [members[c][torch.randperm(len(members[c]), generator=g)[:6]] for c in user_category]
    )  # (U, 6)
    users = UserInputs(
        seq_item_ids=history,
        seq_mask=torch.ones_like(history, dtype=torch.bool),
        position=torch.zeros(n_users, dtype=torch.long),
        source=torch.ones(n_users, dtype=torch.long),
        seq_text_emb=train_items.text_emb[history],  # (U, 6, text_dim)
        seq_visual_emb=train_items.visual_emb[history],  # (U, 6, visual_dim)
    )

    def pairs(items: CandidateInputs, category: torch.Tensor, per_user: int, cold: bool):
        user_rows = torch.arange(n_users).repeat_interleave(per_user)
        item_rows = torch.randint(0, items.batch_size, (len(user_rows),), generator=g)
        match = (category[item_rows] == user_category[user_rows]).float()
        noise = torch.rand(len(match), generator=g) < 0.1
        labels = torch.where(noise, 1 - match, match)
        batch_items = replace(items.take(item_rows), is_cold=torch.full((len(item_rows),), cold))
        return users.take(user_rows), batch_items, {"click": labels, "share": labels * match}

    return pairs(train_items, train_category, 16, False), pairs(test_items, test_category, 12, True)


def test_multimodal_beats_id_only_on_cold_items_auc() -> None:
    (train_user, train_items, train_labels), test = planted_cold_start(seed=0)
    base = replace(TINY, tasks=("click", "share"), pos_weight={}, id_dropout=0.3)
    aucs = {}
    for name, switches in {
        "id-only": ALL_OFF,
        "multimodal": {"use_multimodal": True, "use_dsn": True, "use_min": True},
    }.items():
        model = RankingModel(replace(base, **{**ALL_OFF, **switches}))
        loss_fn = RankingLoss(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(0)
        for step in range(100):
            rows = torch.arange(256) + (step % 4) * 256
            labels = {t: v[rows] for t, v in train_labels.items()}
            train_step(loss_fn, train_user.take(rows), train_items.take(rows), labels, optimizer)
        test_user, test_items, test_labels = test
        model.eval()
        with torch.no_grad():
            logits = model(test_user, test_items)["logits_click"]
        aucs[name] = binary_auc(logits, test_labels["click"])
    assert aucs["multimodal"] > 0.75, aucs
    assert aucs["multimodal"] > aucs["id-only"] + 0.15, aucs


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_config_raises_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="use_dsn needs use_multimodal"):
        RankingConfig(use_multimodal=False, use_min=False)
    with pytest.raises(ValueError, match="pos_weight names unknown tasks"):
        RankingConfig(pos_weight={"purchase": 3.0})
    with pytest.raises(ValueError, match="id_dropout"):
        RankingConfig(id_dropout=1.0)
    with pytest.raises(ValueError, match="embed_dim"):
        RankingConfig(embed_dim=0)


def test_mismatched_dims_raise_value_error_with_the_shapes() -> None:
    model = RankingModel(TINY)
    user, items = random_user(5), random_candidates(5)
    with pytest.raises(
        ValueError, match=r"candidates\.text_emb must have shape \(5, 16\), got \(5, 384\)"
    ):
        model(user, replace(items, text_emb=torch.randn(5, 384)))
    with pytest.raises(ValueError, match=r"user\.seq_visual_emb must have shape \(5, 5, 12\)"):
        model(replace(user, seq_visual_emb=torch.randn(5, 4, 12)), items)
    with pytest.raises(
        ValueError, match=r"1 row \(broadcast\) or one row per candidate \(5\), got 3"
    ):
        model(random_user(3), items)
    with pytest.raises(ValueError, match=r"user\.seq_text_emb is required"):
        model(replace(user, seq_text_emb=None), items)
    with pytest.raises(ValueError, match=r"candidates\.category must hold indices in \[0, 12\)"):
        model(user, replace(items, category=torch.full((5,), 12)))
    with pytest.raises(ValueError, match=r"candidates\.ctr_windows must have shape \(5, 3\)"):
        model(user, replace(items, ctr_windows=torch.rand(5, 4)))
    with pytest.raises(ValueError, match="labels lack tasks"):
        RankingLoss(model)(user, items, {"click": torch.ones(5)})
    with pytest.raises(ValueError, match="one user"):
        score_candidates(model, user, items)


def test_standardize_puts_each_scalar_input_at_mean_0_and_std_1_over_the_fitted_rows() -> None:
    """`standardize`: after `fit_scalar_inputs` on training rows, every scalar block of the
    MMoE input has mean 0 and std 1 per column over those rows (a constant column is left at
    scale 1), the learned blocks are untouched, and the shifts are saved with the weights."""
    switches = {
        k: True for k in ALL_OFF if k not in ("use_user_id", "use_recall_vector", "bin_scalars")
    }
    model = RankingModel(replace(TINY, **{**ALL_OFF, **switches}))
    user, items = random_user(256, 6, model.config, seed=3), random_candidates(256, seed=3)
    items.is_cold = torch.zeros(256, dtype=torch.bool)
    model.eval()

    def blocks() -> dict[str, torch.Tensor]:
        with torch.no_grad():
            enc = model.encode_items(items)
            got, _ = model.input_blocks(
                user, enc, model.project_history(user), items.age_hours, items.ctr_windows
            )
        return got

    before = blocks()
    model.fit_scalar_inputs(user, items)
    after = blocks()
    scalar = [name for name, _, _ in model.input_layout() if name in SCALAR_BLOCKS]
    assert {"age", "ctr", "popularity", "popularity_match", "history_category_share"} <= set(scalar)
    for name in scalar:
        x = after[name]
        varying = before[name].std(0) > 1e-6
        torch.testing.assert_close(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            x.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0
        )
        assert not torch.equal(x, before[name]), name
    for name in ("item_id", "text", "min_fused"):
        torch.testing.assert_close(after[name], before[name])
    state = model.state_dict()
    assert "shift_age" in state and "scale_popularity" in state
    fresh = RankingModel(model.config)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(user, items)["logits_click"], model(user, items)["logits_click"]
        )


def test_piecewise_linear_encodes_each_column_over_its_bins_and_decodes_back() -> None:
    """Each bin reads 0 below it, 1 above it and the position inside it; the first and last bins
    extrapolate; a zero-width bin is a step. Summing bin x width gives the value back."""
    edges = torch.tensor([[0.0, 1.0, 3.0], [1.0, 1.0, 4.0]])  # column 2: a step at 1, then 1-4
    x = torch.tensor([[-2.0, 0.5], [0.5, 1.0], [2.0, 2.5], [5.0, 6.0]])
    got = piecewise_linear(x, edges).view(4, 2, 2)
    want = torch.tensor(
        [
            [[-2.0, 0.0], [0.0, 0.0]],
            [[0.5, 0.0], [0.0, 0.0]],
            [[1.0, 0.5], [1.0, 0.5]],
            [[1.0, 2.0], [1.0, 5 / 3]],
        ]
    )
    torch.testing.assert_close(got, want)
    first = got[:, 0] * (edges[0, 1:] - edges[0, :-1])  # column 1 has no step
    torch.testing.assert_close(first.sum(1) + edges[0, 0], x[:, 0])


def test_scalar_bins_fit_quantile_edges_and_widen_only_the_scalar_blocks() -> None:
    """`bin_scalars`: `fit_scalar_inputs` sets each scalar column's edges to its quantiles over
    the fitted rows; the MMoE then reads bins columns per scalar column, each in [0, 1] over
    those rows but the outer bins' extrapolation; the edges are saved with the weights."""
    bins = 4
    model = RankingModel(replace(TINY, **{**ALL_OFF, **SWITCH_CASES["scalar_bins"]}))
    plain = RankingModel(replace(model.config, bin_scalars=False))
    widths = {name: width for name, width, _ in plain.input_layout()}
    for name, width, _ in model.input_layout():
        assert width == (widths[name] * bins if name in SCALAR_BLOCKS else widths[name]), name
    user, items = random_user(256, 6, model.config, seed=3), random_candidates(256, seed=3)
    model.fit_scalar_inputs(user, items)
    model.eval()
    with torch.no_grad():
        enc = model.encode_items(items)
        blocks, _ = model.input_blocks(
            user, enc, model.project_history(user), items.age_hours, items.ctr_windows
        )
    age = torch.log1p(items.age_hours.clamp(min=0))
    levels = torch.linspace(0, 1, bins + 1)
    torch.testing.assert_close(model.edges_age[0], torch.quantile(age, levels))
    inner = blocks["age"][:, 1:-1]
    assert blocks["age"].shape == (256, bins) and inner.min() >= 0 and inner.max() <= 1
    fresh = RankingModel(model.config)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(user, items)["logits_click"], model(user, items)["logits_click"]
        )


@pytest.mark.parametrize("switch", ["candidate_id", "candidate_content"])
@pytest.mark.parametrize("on", [True, False])
def test_candidate_switches_leave_the_candidates_own_vectors_out_of_the_mmoe(
    switch: str, on: bool
) -> None:
    """`candidate_id` / `candidate_content` off: no item_id / modality block in the MMoE input
    (ID attention still reads the ID); so without MIN a candidate's text vector cannot move its
    score. On, it does."""
    own = {"item_id"} if switch == "candidate_id" else {"text", "visual"}
    model = RankingModel(replace(TINY, **{**ALL_OFF, "use_multimodal": True, switch: on})).eval()
    names = {name for name, _, _ in model.input_layout()}
    assert names & own == (own if on else set())
    user, items = random_user(1, 5, model.config), random_candidates(8)
    other = replace(items, text_emb=torch.randn_like(items.text_emb))
    with torch.no_grad():
        moved = model(user, items)["logits_click"] != model(user, other)["logits_click"]
    assert bool(moved.all()) is (on or switch == "candidate_id")
