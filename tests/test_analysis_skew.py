"""The skew check: online values equal offline point-in-time values after materialize, and a
value written into the online store by another path is reported under its feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, catalog
from analysis.skew import check_skew, same
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from tests.analysis_fixtures import (  # noqa: F401
    END,
    ITEM_STATS,
    VIEWS_WITHOUT_DATA,
    copy_world,
    known_world,
)


@pytest.mark.parametrize(
    ("offline", "online", "expected"),
    [
        (np.float32(0.1), 0.10000000149011612, True),  # Float32 read back as a Python float
        (0.25, 0.2501, False),
        (None, None, True),
        (float("nan"), None, True),  # pandas' missing float vs Feast's None
        (None, 0.0, False),
        ([1, 2], np.array([1, 2]), True),
        ([1, 2], [2, 1], False),
        ([], None, False),  # an empty sequence is a value, not a null
        ("video", "video", True),
        ("video", "live", False),
    ],
)
def test_same_compares_floats_with_tolerance_lists_by_element_and_nulls_as_equal(
    offline, online, expected
) -> None:
    assert same(offline, online) is expected


def planted_world(known: Settings, root) -> Settings:
    """A copy of the known world whose online store says item 1's ctr_7d is 0.99."""
    settings = copy_world(known, root)
    newest = {name: values[1] for name, (values, _) in ITEM_STATS.items()}  # item 1 at END
    assert newest["item_id"] == 1 and newest["event_timestamp"] == END
    row = pd.DataFrame([{**newest, "ctr_7d": 0.99}])
    open_store(settings).write_to_online_store("item_stats", row)
    return settings


def test_skew_check_finds_nothing_right_after_materialize(known_world: Settings) -> None:  # noqa: F811
    store = open_store(known_world)
    frame = check_skew(store, catalog.from_store(store), world_end(known_world), sample=10)
    with_data = [info for info in catalog.from_store(store) if info.name not in VIEWS_WITHOUT_DATA]
    assert len(frame) == sum(len(info.features) for info in with_data)
    assert frame.mismatches.sum() == 0
    assert frame.set_index("feature").at["ctr_7d", "compared"] == 3  # every item with stats


def test_skew_check_names_a_value_planted_in_the_online_store(
    known_world: Settings,  # noqa: F811
    tmp_path,
) -> None:
    settings = planted_world(known_world, tmp_path / "planted")
    store = open_store(settings)
    frame = check_skew(store, catalog.from_store(store), world_end(settings), sample=10)
    bad = frame[frame.mismatches > 0]
    assert bad[["feature_view", "feature", "mismatches"]].values.tolist() == [
        ["item_stats", "ctr_7d", 1]
    ]
    assert "item_id=1" in bad.example.iloc[0] and "0.99" in bad.example.iloc[0]


def test_skew_check_rejects_a_naive_end_time(known_world: Settings) -> None:  # noqa: F811
    store = open_store(known_world)
    with pytest.raises(AnalysisError, match="time zone"):
        check_skew(store, catalog.from_store(store), END.replace(tzinfo=None))
