"""`mmrec simulate` on the tiny world: simulated shoppers through real served bentos for two
days, their events back through POST /events as the next data days, the features after each
day equal to a from-scratch rebuild of the same events, the report; and the refusals (imported
data has no hidden truth; bad options)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from mmrec import event_log
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.world_manifest import read_world_manifest
from simulation.arms import ARMS
from simulation.loop import clicked_items
from simulation.parity import compare, rebuild
from simulation.report import PLOTTED
from simulation.truth import HiddenWorld
from tests.conftest import make_workspace, run_cli

BYOD = Path(__file__).parent / "fixtures" / "byod"
USERS, K = 48, 10


def refused(*args: str) -> str:
    """`mmrec ARGS` must exit 2; returns its output."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def test_imported_data_is_refused_for_want_of_a_hidden_truth(tmp_path: Path) -> None:
    settings = make_workspace(tmp_path / "ws")
    ws = str(settings.workspace)
    run_cli("data", "import", "--events", str(BYOD / "events.csv"),
            "--items", str(BYOD / "items.csv"), "-w", ws)  # fmt: skip
    output = refused("simulate", "--days", "1", "-w", ws)
    assert "without a hidden truth" in output and "mmrec generate" in output
    assert not (settings.data_dir / "simulation").exists()  # nothing copied or served


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--scene", "detail"], "scene must be one of"),
        (["--arms", "full,best"], "unknown arms"),
        (["--days", "0"], "must be >= 1"),
        (["--k", "500"], "k must be in 1..200"),
    ],
)
def test_bad_options_exit_2_naming_them(tiny_world: Settings, option, message) -> None:
    output = refused("simulate", *option, "-w", str(tiny_world.workspace))
    assert message in output
    assert not (tiny_world.data_dir / "simulation").exists()


@pytest.fixture(scope="module")
def sim_world(trained_world: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The trained tiny world (its training sets and models) in a workspace of its own, with
    the no-GMF ranker (one epoch) and its index in its own milvus-lite file, as `mmrec run`
    leaves a workspace."""
    root = tmp_path_factory.mktemp("simulate") / "ws"
    skipped = shutil.ignore_patterns("feast", "index", "bentos", "prometheus_multiproc_dir")
    shutil.copytree(trained_world.workspace, root, ignore=skipped)
    ws = str(root)
    for args in (
        ["features", "apply"],
        ["features", "materialize"],
        [
            "train",
            "rank",
            "--epochs",
            "1",
            "--no-dsn",
            "--no-min",
            "--model-name",
            "ranking-no-gmf",
        ],
        ["index", "build"],
    ):
        run_cli(*args, "-w", ws)
    return Settings(workspace=root)


@pytest.fixture(scope="module")
def simulated(sim_world: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two simulated days with every arm, the parity check after each, the copy kept."""
    out = tmp_path_factory.mktemp("report")
    run_cli(
        "simulate", "--days", "2", "--users", str(USERS), "--retrain-every", "0",
        "--check-parity", "--keep-workspaces", "--out", str(out), "-w", str(sim_world.workspace),
    )  # fmt: skip
    run_dir = sim_world.data_dir / "simulation" / "seed-0"
    return {
        "report": json.loads((out / "simulation-tiny.json").read_text()),
        "out": out,
        "records": pd.read_parquet(run_dir / "records.parquet"),
        "loop": Settings(workspace=run_dir / "workspace"),
    }


@pytest.mark.slow
def test_the_simulated_days_are_the_next_data_days(sim_world: Settings, simulated: dict) -> None:
    end = datetime.fromisoformat(read_world_manifest(sim_world)["end"])
    run = simulated["report"]["runs"][0]
    days = [(end + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(2)]
    assert [d["data_day"] for d in run["days"]] == days
    assert event_log.log_days(simulated["loop"]) == days
    assert not event_log.log_dir(sim_world).exists()  # the workspace itself is untouched


@pytest.mark.slow
def test_every_user_visits_once_a_day_in_their_arm(simulated: dict) -> None:
    records = simulated["records"]
    assert set(records.arm) == set(ARMS)
    assert records.groupby("user_id").day.apply(lambda days: sorted(days) == [1, 2]).all()
    assert records.groupby("user_id").arm.nunique().eq(1).all()  # an arm for the whole run
    assert records.user_id.nunique() == USERS and (records.impressions == K).all()


@pytest.mark.slow
def test_the_event_log_holds_exactly_the_shown_items_and_the_drawn_clicks(simulated: dict) -> None:
    records = simulated["records"]
    log = pd.concat(pq.read_table(p).to_pandas() for p in event_log.segments(simulated["loop"]))
    assert log.groupby("event_type").size().to_dict() == {
        "impression": records.impressions.sum(),
        "click": records.clicks.sum(),
    }
    for kind, column in (("impression", "items"), ("click", "clicked")):
        logged = log[log.event_type == kind]
        pairs = set(zip(logged.user_id, logged.item_id, strict=True))
        assert pairs == {(r.user_id, i) for r in records.itertuples() for i in getattr(r, column)}


@pytest.mark.slow
def test_the_oracles_show_the_best_by_the_truth(simulated: dict) -> None:
    records, loop = simulated["records"], simulated["loop"]
    by_arm = {arm: frame for arm, frame in records.groupby("arm")}
    for arm in ("oracle_candidates", "oracle_catalog"):
        frame = by_arm[arm]
        ceiling = "best_candidate_clicks" if arm == "oracle_candidates" else "best_catalog_clicks"
        assert np.allclose(frame.expected_clicks, frame[ceiling])
    for arm in ("full", "no_gmf"):  # a feed of k of its candidates cannot beat their best k
        frame = by_arm[arm]
        assert (frame.expected_clicks <= frame.best_candidate_clicks + 1e-9).all()
    assert by_arm["popularity"].best_candidate_clicks.isna().all()
    # the catalog oracle's items are the user's most likely clicks: every item more likely
    # than the last one shown is shown, or one the user clicked before
    world = HiddenWorld.load(loop)
    for row in by_arm["oracle_catalog"].itertuples():
        clock = int(datetime.fromisoformat(f"{row.data_day}T00:00:00+00:00").timestamp())
        p = world.catalog_probability(row.user_id, clock, "home")
        shown = world.rows_of(np.asarray(row.items))
        assert (np.diff(p[shown]) <= 0).all()
        better = set(world.item_ids[p > p[shown].min()].tolist()) - set(row.items)
        assert better <= set(clicked_items(loop, [row.user_id]).get(row.user_id, []).tolist())


@pytest.mark.slow
def test_the_loop_features_equal_a_rebuild_after_each_day(simulated: dict) -> None:
    for day in simulated["report"]["runs"][0]["days"]:
        parity = day["parity"]
        assert parity["equal"], parity
        assert parity["partitions_compared"] > 0 and parity["online_values_compared"] > 10_000


@pytest.mark.slow
def test_the_parity_check_finds_a_changed_value(simulated: dict, tmp_path: Path) -> None:
    """The comparison can fail: one online sequence and one offline partition changed."""
    loop = simulated["loop"]
    rebuilt = rebuild(loop, tmp_path / "rebuilt")
    assert compare(loop, rebuilt).equal
    user = int(simulated["records"].user_id.iloc[0])
    store = open_store(loop)
    row = store.get_online_features(
        features=["user_behavior_seq:item_click_seq"], entity_rows=[{"user_id": user}]
    ).to_dict()
    view = store.get_feature_view("user_behavior_seq")
    frame = pd.DataFrame({"user_id": [user], "event_timestamp": [pd.Timestamp.now(tz="UTC")]})
    for field in view.features:
        frame[field.name] = [[7, 7, 7] if field.name == "item_click_seq" else []]
    store.write_to_online_store("user_behavior_seq", frame)
    assert row["item_click_seq"][0] != [7, 7, 7]
    partition = sorted((loop.offline_dir / "item_stats").glob("*/*.parquet"))[-1]
    table = pq.read_table(partition)
    pq.write_table(table.slice(1), partition)
    report = compare(loop, rebuilt)
    assert not report.equal and report.n_differences >= 2
    text = " ".join(report.differences)
    assert f"of user_id {user}: loop" in text and partition.parent.name in text


@pytest.mark.slow
def test_the_report_has_every_arm_day_plot_and_the_served_latency(simulated: dict) -> None:
    run = simulated["report"]["runs"][0]
    assert list(run["summary"]) == ["1", "2", "all"]
    for period in run["summary"].values():
        assert set(period) == set(ARMS)
        full = period["full"]
        assert full["ctr"]["low"] <= full["ctr"]["value"] <= full["ctr"]["high"]
        assert set(full) >= {"gap_to_oracle_candidates", "gap_to_oracle_catalog", "coverage"}
    requests = simulated["records"].groupby(["day", "arm"]).size()
    for entry in run["latency"]:
        asked = [arm for arm in ARMS if ARMS[arm].bento == entry["bento"] and ARMS[arm].asks]
        total = sum(requests.get((entry["day"], arm), 0) for arm in asked)
        stages = entry["served"]["mmrec_stage_seconds"]["total"]
        timed = {arm: entry["client"][arm]["count"] for arm in asked}
        assert stages["count"] == total == sum(timed.values())  # each bento its own /metrics
        assert stages["p50_ms"] > 0 and entry["client"]["events"]["count"] > 0
    for metric in PLOTTED:
        assert (simulated["out"] / f"simulation-tiny-{metric}.png").stat().st_size > 10_000
    text = (simulated["out"] / "simulation-tiny.md").read_text()
    assert "Full pipeline vs the baselines" in text and "Served latency" in text
