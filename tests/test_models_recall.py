"""Behaviour of the two-tower recall model (models/recall.py) on tiny tensors."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F

from models.recall import (
    CHANNELS,
    ItemInputs,
    RecallBatch,
    RecallConfig,
    RecallLoss,
    SkuQuery,
    TwoTowerRecall,
    UserQuery,
    encode_items,
    encode_queries,
    in_batch_softmax_loss,
    score_pairs,
)

N_CATS = 12  # the world's category count (mmrec.vocab.N_CATEGORIES), the config default

TINY = RecallConfig(
    n_item_buckets=256,
    n_sku_buckets=64,
    id_dim=8,
    text_dim=16,
    visual_dim=12,
    field_dim=16,
    n_heads=2,
    hidden_dims=(32,),
    out_dim=16,
)


def random_items(n: int, config: RecallConfig = TINY, seed: int = 0) -> ItemInputs:
    g = torch.Generator().manual_seed(seed)
    return ItemInputs(
        item_id=torch.randint(0, 1000, (n,), generator=g),
        text_emb=torch.randn(n, config.text_dim, generator=g),
        visual_emb=torch.randn(n, config.visual_dim, generator=g),
        tags=(torch.rand(n, config.n_categories, generator=g) < 0.2).float(),
        quality=torch.rand(n, generator=g),
    )


def random_query(channel: str, n: int, seed: int = 1) -> SkuQuery | ItemInputs | UserQuery:
    g = torch.Generator().manual_seed(seed)
    if channel == "s2v":
        return SkuQuery(
            sku_id=torch.randint(0, 500, (n,), generator=g),
            sku_category=torch.randint(0, N_CATS, (n,), generator=g),
        )
    if channel == "v2v":
        return random_items(n, seed=seed)
    mask = torch.rand(n, 5, generator=g) < 0.7
    mask[0] = False  # a user without history must still get a vector
    return UserQuery(
        seq_item_ids=torch.randint(0, 1000, (n, 5), generator=g),
        seq_mask=mask,
        category_affinity=torch.rand(n, N_CATS, generator=g),
    )


def train(loss_fn: RecallLoss, batches: list[RecallBatch], steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(batches[step % len(batches)])["loss"]
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history


# ---------------------------------------------------------------------------------------------
# Shapes and contracts


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize(
    "overrides",
    [{}, {"interaction": "fm"}, {"seq_pooling": "mean", "v2v_adapter": False}],
    ids=["attention", "fm", "mean-pool-no-adapter"],
)
def test_towers_return_unit_vectors_and_pair_logits(channel: str, overrides: dict) -> None:
    model = TwoTowerRecall(replace(TINY, **overrides))
    out = model(channel, random_query(channel, 6), random_items(6))
    assert out["logits"].shape == (6,)
    for key in ("query_vecs", "item_vecs"):
        assert out[key].shape == (6, TINY.out_dim)
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(6))
    expected = (out["query_vecs"] * out["item_vecs"]).sum(1) / TINY.temperature
    torch.testing.assert_close(out["logits"], expected)
    out["logits"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("channel", "query_tower"),
    [("s2v", "sku_tower"), ("v2v", "v2v_adapter"), ("u2v", "user_tower")],
)
def test_gradients_reach_the_item_tower_and_the_channels_query_tower_only(
    channel: str, query_tower: str
) -> None:
    model = TwoTowerRecall(TINY)
    model(channel, random_query(channel, 6), random_items(6))["logits"].sum().backward()
    trained = ("item_tower.", "item_id_embedding.", f"{query_tower}.")
    for name, param in model.named_parameters():  # the shared ID table is listed once
        gets_grad = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert gets_grad == name.startswith(trained), name


def test_v2v_adapter_starts_as_identity_so_a_seed_matches_itself() -> None:
    model = TwoTowerRecall(TINY)
    items = random_items(4)
    out = model("v2v", items, items)
    torch.testing.assert_close(out["logits"], torch.full((4,), 1 / TINY.temperature))


def test_id_only_item_tower_needs_no_modalities_and_has_no_projection_for_them() -> None:
    model = TwoTowerRecall(replace(TINY, item_fields=("id",)))
    vecs = model.encode_items(ItemInputs(item_id=torch.arange(3)))
    assert vecs.shape == (3, TINY.out_dim)
    assert set(model.item_tower.projections) == {"id"}


def test_encode_items_in_chunks_matches_one_pass_and_restores_training_mode() -> None:
    model = TwoTowerRecall(replace(TINY, dropout=0.5))
    items = random_items(10)
    chunked = encode_items(model, items, batch_size=3)
    assert model.training
    model.eval()
    torch.testing.assert_close(chunked, model.encode_items(items))
    users = random_query("u2v", 7)
    torch.testing.assert_close(
        encode_queries(model, "u2v", users, batch_size=2), model.encode_queries("u2v", users)
    )
    assert encode_items(model, items.take(slice(0, 0))).shape == (0, TINY.out_dim)


def test_score_pairs_is_sigmoid_of_logits_in_eval_mode() -> None:
    model = TwoTowerRecall(TINY).eval()
    query, items = random_query("s2v", 5), random_items(5)
    probs = score_pairs(model, "s2v", query, items)
    torch.testing.assert_close(probs, torch.sigmoid(model("s2v", query, items)["logits"]))
    assert ((probs > 0) & (probs < 1)).all()


def test_in_batch_softmax_masks_accidental_hits_and_logq_shifts_columns() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    v = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    distinct = torch.arange(4)
    base = in_batch_softmax_loss(q, v, distinct, 0.1)
    manual = F.cross_entropy(q @ v.T / 0.1, torch.arange(4))
    torch.testing.assert_close(base, manual)
    # the same item in every row: no row has a true negative, the loss vanishes
    same = in_batch_softmax_loss(q, v, torch.zeros(4, dtype=torch.long), 0.1)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    # a uniform log q changes nothing; a popular item (high q) is penalised less as a negative
    uniform = in_batch_softmax_loss(q, v, distinct, 0.1, torch.full((4,), -3.0))
    torch.testing.assert_close(uniform, base)
    skewed = torch.tensor([0.0, -5.0, -5.0, -5.0])
    manual_logq = F.cross_entropy(q @ v.T / 0.1 - skewed, torch.arange(4))
    torch.testing.assert_close(in_batch_softmax_loss(q, v, distinct, 0.1, skewed), manual_logq)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_config_raises_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        RecallConfig(field_dim=10, n_heads=3)
    with pytest.raises(ValueError, match="item_fields"):
        RecallConfig(item_fields=("id", "audio"))
    with pytest.raises(ValueError, match="interaction"):
        RecallConfig(interaction="dcn")
    with pytest.raises(ValueError, match="temperature"):
        RecallConfig(temperature=0.0)


def test_bad_inputs_raise_value_error_with_the_shapes() -> None:
    model = TwoTowerRecall(TINY)
    items = random_items(4)
    with pytest.raises(
        ValueError, match=r"items.text_emb must have shape \(4, 16\), got \(4, 384\)"
    ):
        model.encode_items(replace(items, text_emb=torch.randn(4, 384)))
    with pytest.raises(ValueError, match=r"items\.visual_emb is required"):
        model.encode_items(replace(items, visual_emb=None))
    with pytest.raises(ValueError, match="must be an integer tensor"):
        model.encode_items(replace(items, item_id=items.item_id.float()))
    with pytest.raises(ValueError, match="takes a UserQuery"):
        model("u2v", random_query("s2v", 4), items)
    with pytest.raises(ValueError, match="channel must be one of"):
        model("x2v", random_query("s2v", 4), items)
    with pytest.raises(ValueError, match="same number of rows"):
        model("s2v", random_query("s2v", 3), items)
    with pytest.raises(ValueError, match=r"sku_category must hold indices in \[0, 12\)"):
        model("s2v", SkuQuery(torch.arange(4), torch.tensor([0, 1, 2, 12])), items)
    users = random_query("u2v", 4)
    with pytest.raises(ValueError, match="category_affinity"):
        model("u2v", replace(users, category_affinity=torch.rand(4, 5)), items)
    with pytest.raises(ValueError, match="seq_mask must be a bool tensor"):
        model("u2v", replace(users, seq_mask=users.seq_mask.float()), items)
    with pytest.raises(ValueError, match="item_log_q"):
        loss_fn = RecallLoss(
            TwoTowerRecall(replace(TINY, softmax_weight=1.0, logq_correction=True))
        )
        loss_fn(RecallBatch("v2v", items, items, torch.ones(4)))


# ---------------------------------------------------------------------------------------------
# Training behaviour


@dataclass
class PlantedWorld:
    """Users who like one latent category, visible only in the items' text embeddings."""

    items: ItemInputs
    users: UserQuery  # histories = training clicks
    train_clicks: torch.Tensor  # (n_users, n_train) item indices
    heldout_clicks: torch.Tensor  # (n_users, n_heldout) item indices


def planted_world(seed: int = 0, n_latent: int = 4, per_category: int = 30, n_users: int = 64):
    g = torch.Generator().manual_seed(seed)
    n_items = n_latent * per_category
    category = torch.arange(n_items) // per_category
    centroids = F.normalize(torch.randn(n_latent, TINY.text_dim, generator=g), dim=1)
    text = F.normalize(
        centroids[category] + 0.15 * torch.randn(n_items, TINY.text_dim, generator=g), dim=1
    )
    items = ItemInputs(
        item_id=torch.arange(n_items),
        text_emb=text,
        visual_emb=torch.randn(n_items, TINY.visual_dim, generator=g),  # noise
        tags=(torch.rand(n_items, N_CATS, generator=g) < 0.2).float(),  # noise
        quality=torch.rand(n_items, generator=g),
    )
    user_category = torch.arange(n_users) % n_latent
    # Within a category, training clicks favour a few items (Zipf) so popularity is informative
    # about what is clicked but blind to who clicks it.
    zipf = 1.0 / torch.arange(1, per_category + 1).float()
    train, heldout = [], []
    for u in range(n_users):
        members = torch.nonzero(category == user_category[u]).squeeze(1)
        picked = torch.multinomial(zipf, 13, generator=g)
        train.append(members[picked[:8]])
        heldout.append(members[picked[8:]])
    train_clicks, heldout_clicks = torch.stack(train), torch.stack(heldout)
    users = UserQuery(
        seq_item_ids=train_clicks,
        seq_mask=torch.ones_like(train_clicks, dtype=torch.bool),
        category_affinity=torch.rand(n_users, N_CATS, generator=g),  # uninformative
    )
    return PlantedWorld(items, users, train_clicks, heldout_clicks)


def pair_batches(world: PlantedWorld, seed: int, n_negatives: int = 4) -> list[RecallBatch]:
    """(user, clicked item, 1) rows with `n_negatives` global random negatives each, shuffled."""
    g = torch.Generator().manual_seed(seed)
    n_users, n_train = world.train_clicks.shape
    n_items = world.items.batch_size
    users = torch.arange(n_users).repeat_interleave(n_train)
    positives = world.train_clicks.flatten()
    neg_users = users.repeat_interleave(n_negatives)
    negatives = torch.randint(0, n_items, (len(neg_users),), generator=g)
    all_users = torch.cat([users, neg_users])
    all_items = torch.cat([positives, negatives])
    labels = torch.cat([torch.ones(len(users)), torch.zeros(len(neg_users))])
    order = torch.randperm(len(labels), generator=g)
    return [
        RecallBatch(
            "u2v",
            world.users.take(all_users[rows]),
            world.items.take(all_items[rows]),
            labels[rows],
        )
        for rows in order.split(320)
    ]


def recall_at_k(scores: torch.Tensor, world: PlantedWorld, k: int = 10) -> float:
    """Mean share of each user's held-out clicks in its top k, training clicks excluded."""
    scores = scores.clone()
    scores.scatter_(1, world.train_clicks, float("-inf"))
    top = scores.topk(k, dim=1).indices  # (U, k)
    hits = (top.unsqueeze(2) == world.heldout_clicks.unsqueeze(1)).any(1).float()  # (U, n_heldout)
    return float(hits.mean())


def test_recall_loss_falls_with_bce_plus_logq_softmax() -> None:
    world = planted_world()
    config = replace(
        TINY, n_item_buckets=world.items.batch_size, softmax_weight=0.5, logq_correction=True
    )
    batches = pair_batches(world, seed=1)[:2]
    for batch in batches:
        batch.item_log_q = torch.full((batch.labels.shape[0],), -5.0)
    torch.manual_seed(0)
    history = train(RecallLoss(TwoTowerRecall(config)), batches, steps=80, lr=1e-2)
    assert sum(history[-6:]) / 6 < 0.6 * sum(history[:6]) / 6, history


def test_planted_category_signal_beats_popularity_on_recall_at_10() -> None:
    world = planted_world()
    n_items = world.items.batch_size
    config = replace(TINY, n_item_buckets=n_items)
    model = TwoTowerRecall(config)
    torch.manual_seed(0)
    train(RecallLoss(model), pair_batches(world, seed=1), steps=160, lr=1e-2)

    item_vecs = encode_items(model, world.items)  # (I, d)
    user_vecs = encode_queries(model, "u2v", world.users)  # (U, d)
    model_recall = recall_at_k(user_vecs @ item_vecs.T, world)
    popularity = torch.bincount(world.train_clicks.flatten(), minlength=n_items).float()
    popular_recall = recall_at_k(popularity.expand(world.train_clicks.shape[0], -1), world)
    assert model_recall > popular_recall + 0.15, (model_recall, popular_recall)


def test_same_seed_trains_to_identical_parameters_and_another_seed_does_not() -> None:
    world = planted_world(n_users=16)
    batches = pair_batches(world, seed=1)[:1]

    def run(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(global_seed)  # must not matter: initialisation follows config.seed
        model = TwoTowerRecall(replace(TINY, seed=seed, softmax_weight=0.5))
        train(RecallLoss(model), batches, steps=5, lr=1e-2)
        return model.state_dict()

    first, second, other = run(7, global_seed=1), run(7, global_seed=2), run(8, global_seed=1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
