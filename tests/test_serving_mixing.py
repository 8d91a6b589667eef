"""Mixed ranking: queues keep their order, quotas hold, and the greedy merge is optimal."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.mixing import MixConfig, item_values, list_value, mix


@given(
    values=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40),
    k=st.integers(1, 20),
    scene=st.sampled_from(["home", "inner", "detail"]),
    seed=st.integers(0, 1000),
)
@settings(max_examples=150, deadline=None)
def test_each_queue_keeps_its_order_and_quotas_hold(values, k, scene, seed) -> None:
    rng = np.random.default_rng(seed)
    materials = list(rng.choice(["video", "live", "shop", "aggregated"], len(values)))
    config = MixConfig()
    values = np.asarray(values)
    order = mix(list(range(len(values))), materials, values, scene, k, config)
    assert len(order) == len(set(order)) <= k
    for material in set(materials):
        picked = [values[i] for i in order if materials[i] == material]
        assert picked == sorted(picked, reverse=True)
        cap = max(1, int(np.floor(config.quotas[scene][material] * k)))
        assert len(picked) <= cap


def test_greedy_merge_matches_brute_force_optimum() -> None:
    rng = np.random.default_rng(3)
    config = MixConfig(quotas={"home": {"video": 0.5, "live": 0.5, "shop": 0.5, "aggregated": 0.5}})
    for _ in range(30):
        values = rng.random(7)
        materials = list(rng.choice(["video", "live", "shop"], 7))
        k = 4
        order = mix(list(range(7)), materials, values, "home", k, config)
        best = 0.0
        candidates = itertools.chain.from_iterable(
            itertools.permutations(range(7), n) for n in range(1, k + 1)
        )
        for perm in candidates:
            counts = {m: sum(materials[i] == m for i in perm) for m in set(materials)}
            if all(c <= 2 for c in counts.values()):
                best = max(best, list_value(values, perm))
        assert list_value(values, order) == pytest.approx(best)


def test_item_values_weight_the_task_probabilities() -> None:
    probs = {"click": np.array([0.1, 0.5]), "cart": np.array([0.2, 0.0])}
    assert item_values(probs, {"click": 1.0, "cart": 2.0}).tolist() == pytest.approx([0.5, 0.5])
    # a task the ranker did not score (absent from the data) weighs nothing
    assert item_values(probs, {"click": 1.0, "share": 5.0}).tolist() == pytest.approx([0.1, 0.5])
    with pytest.raises(ValueError, match="no task weight"):
        item_values(probs, {"share": 1.0})
    with pytest.raises(ValueError, match="unknown tasks"):
        MixConfig(task_weights={"clikc": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"scene": "lobby"}, "scene must be"), ({"k": 0}, "k must be")],
)
def test_bad_arguments_are_rejected(kwargs, message) -> None:
    args = {
        "item_ids": [1],
        "materials": ["video"],
        "values": np.array([1.0]),
        "scene": "home",
        "k": 3,
        "config": MixConfig(),
    }
    with pytest.raises(ValueError, match=message):
        mix(**{**args, **kwargs})


def test_quota_config_is_validated() -> None:
    with pytest.raises(ValueError, match="materials"):
        MixConfig(quotas={"home": {"podcast": 0.5}})
