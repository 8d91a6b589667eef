"""The DuckDB session: the online-store export, stable view names, and the generated
views.sql running in the plain `duckdb` CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis import views
from analysis.online_export import online_dir
from analysis.pipeline import open_session
from analysis.queries import SQL_DIR
from mmrec.settings import Settings
from tests.analysis_fixtures import END, known_world  # noqa: F401 (fixture)


def test_online_export_holds_materialized_values_and_nulls_for_absent_rows(
    known_world: Settings,  # noqa: F811
) -> None:
    table = pq.read_table(online_dir(known_world) / "item_stats.parquet").to_pandas()
    rows = table.set_index("item_id")
    assert sorted(rows.index) == [1, 2, 3]  # the entities the offline source knows
    assert rows.at[1, "ctr_7d"] == pytest.approx(0.25)  # the newest row, not the older 0.05
    assert rows.at[1, "event_timestamp"] == END
    assert rows.loc[3].isna().all()  # item 3 is outside the TTL: no online row


def test_session_names_every_layer_with_stable_view_names(known_world: Settings) -> None:  # noqa: F811
    names = views.view_names(open_session(known_world))
    expected = {
        "world", "events", "items", "users", "skus",
        "offline_item_stats", "offline_user_behavior_seq", "offline_item_embeddings",
        "online_item_stats", "online_user_cross_domain",
        "training_ranking_v1", "training_recall_v1",
        "feature_catalog", "feature_rows", "feature_nulls", "entity_universe", "training_labels",
    }  # fmt: skip
    assert expected <= names


def test_views_are_only_made_for_files_that_exist(known_world: Settings, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(workspace=tmp_path)
    shutil.copytree(known_world.raw_dir, settings.raw_dir)
    names = views.view_names(open_session(settings))
    assert {"events", "items", "world", "entity_universe"} <= names
    assert not {n for n in names if n.startswith(("offline_", "online_", "training_"))}


def test_saved_views_file_uses_paths_relative_to_the_workspace(known_world: Settings) -> None:  # noqa: F811
    text = views.views_file(known_world).read_text()
    assert "'data/offline/item_stats/*/*.parquet'" in text
    assert str(known_world.workspace) not in text


def _duckdb_cli() -> str:
    beside = Path(sys.executable).parent / "duckdb"
    found = str(beside) if beside.exists() else shutil.which("duckdb")
    if found is None:
        pytest.fail("the duckdb CLI is missing: pip install 'duckdb-cli==1.5.*' (dev dependency)")
    return found


def test_views_file_and_ready_queries_run_in_the_plain_duckdb_cli(known_world: Settings) -> None:  # noqa: F811
    reads = ["-c", ".read data/analysis/views.sql", "-c", f".read {SQL_DIR / 'coverage.sql'}"]
    result = subprocess.run(
        [_duckdb_cli(), "-csv", *reads],
        cwd=known_world.workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "item_stats,item_id,4,3,2,2,0.5,0.5" in result.stdout


def test_string_id_workspaces_show_and_take_their_own_ids(tmp_path: Path) -> None:
    """In the session and in views.sql under the plain CLI: `user_id` and `item_id` are the
    data's string ids (joins across raw tables still work), the maps sit beside them."""
    from ingest.importer import import_data
    from tests.test_ingest import NOW
    from tests.test_ingest_ids import item, string_files, user

    settings = Settings(workspace=tmp_path / "ws")
    import_data(settings, **string_files(tmp_path / "in"), now=NOW)
    con = open_session(settings)
    query = (
        "SELECT e.user_id, e.item_id, i.title FROM events e JOIN items i USING (item_id) "
        f"WHERE e.user_id = '{user(3)}' AND e.item_id = '{item(5)}' LIMIT 1"
    )
    assert con.execute(query).fetchall()[0][:2] == (user(3), item(5))
    universe = con.execute("SELECT DISTINCT typeof(entity_id) FROM entity_universe").fetchall()
    assert universe == [("VARCHAR",)]
    key = con.execute(f"SELECT key FROM item_id_map WHERE id = '{item(5)}'").fetchall()[0][0]
    assert key == 4  # the items' keys follow their ids' order
    views.write(settings, [])
    result = subprocess.run(
        [_duckdb_cli(), "-csv", "-c", ".read data/analysis/views.sql", "-c", query],
        cwd=settings.workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"{user(3)},{item(5)}," in result.stdout
