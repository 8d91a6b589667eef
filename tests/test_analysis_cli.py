"""`mmrec sql` and `mmrec analyze ...` through Typer, mounted as the `mmrec` app mounts them:
tables printed, the report and its plots written, bad input exiting 2 with a message."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import typer
from typer.testing import CliRunner

from analysis.cli import analyze_app, sql
from mmrec.settings import Settings
from tests.analysis_fixtures import copy_world, known_world  # noqa: F401 (fixture)
from tests.conftest import make_workspace
from tests.test_analysis_skew import planted_world

cli = typer.Typer()
cli.add_typer(analyze_app, name="analyze")
cli.command("sql")(sql)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})  # rich wraps at 80
    return result.exit_code, result.output


def test_sql_prints_the_result_as_a_table(known_world: Settings) -> None:  # noqa: F811
    code, output = invoke(
        "sql",
        "SELECT material, count(*) AS n FROM items GROUP BY ALL ORDER BY n DESC, material",
        "--workspace",
        str(known_world.workspace),
    )
    assert code == 0, output
    assert "material" in output and "video" in output and "│ 2" in output


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM no_such_view", "no_such_view"),
        ("SELECT 1 / 'x'", "Conversion Error"),
    ],
)
def test_bad_sql_exits_2_with_duckdbs_message(
    known_world: Settings,  # noqa: F811
    query: str,
    message: str,
) -> None:
    code, output = invoke("sql", query, "--workspace", str(known_world.workspace))
    assert code == 2
    assert "error:" in output and message in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("COPY (SELECT * FROM items) TO '{out}'", "COPY statements are refused"),
        ("EXPORT DATABASE '{folder}'", "EXPORT statements are refused"),
        ("ATTACH '{out}.db' AS other", "ATTACH statements are refused"),
        ("INSTALL httpfs", "LOAD statements are refused"),
        ("SELECT 1; PRAGMA enable_profiling", "PRAGMA statements are refused"),
        ("SET enable_external_access = true", "SET statements are refused"),
        ("CREATE TABLE copied AS SELECT * FROM items", "CREATE statements are refused"),
        ("SELECT * FROM read_text('{secret}')", "file system operations are disabled"),
    ],
)
def test_sql_is_read_only_and_writes_no_file(
    known_world: Settings,  # noqa: F811
    tmp_path: Path,
    statement: str,
    message: str,
) -> None:
    """`mmrec sql` runs SELECTs over the views and nothing else: a COPY TO (or any writing
    statement) exits 2 saying so, and no file appears; files outside the workspace's data
    cannot be read either."""
    out, secret = tmp_path / "stolen.csv", tmp_path / "secret.txt"
    secret.write_text("not for the analyst")
    query = statement.format(out=out, folder=tmp_path / "export", secret=secret)
    code, output = invoke("sql", query, "--workspace", str(known_world.workspace))
    assert code == 2, output
    assert "error:" in output and message in output and "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]


def test_analyze_query_lists_queries_with_their_missing_views(tmp_path: Path) -> None:
    make_workspace(tmp_path)  # a workspace without data: every view is missing
    code, output = invoke("analyze", "query", "--workspace", str(tmp_path))
    assert code == 0, output
    assert "label_rates" in output and "training_labels" in output


def test_analyze_query_runs_a_ready_query(known_world: Settings) -> None:  # noqa: F811
    code, output = invoke("analyze", "query", "coverage", "-w", str(known_world.workspace))
    assert code == 0, output
    assert "user_behavior_seq" in output and "0.75" in output


def test_analyze_query_with_an_unknown_name_exits_2(known_world: Settings) -> None:  # noqa: F811
    code, output = invoke("analyze", "query", "nope", "-w", str(known_world.workspace))
    assert (code, "no query 'nope'" in output) == (2, True)


def test_analyze_without_a_feature_registry_exits_2_saying_what_to_run(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    code, output = invoke("analyze", "views", "--workspace", str(tmp_path))
    assert code == 2
    assert "mmrec features apply" in output


def test_analyze_skew_exits_1_and_names_the_planted_feature(
    known_world: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = planted_world(known_world, tmp_path / "planted")
    code, output = invoke("analyze", "skew", "--view", "item_stats", "-w", str(settings.workspace))
    assert code == 1, output
    assert "ctr_7d" in output and "ctr_home_7d" not in output


def test_analyze_skew_with_an_unknown_view_exits_2(known_world: Settings) -> None:  # noqa: F811
    code, output = invoke("analyze", "skew", "--view", "nope", "-w", str(known_world.workspace))
    assert code == 2 and "unknown feature views ['nope']" in output


def test_report_writes_markdown_with_every_section_and_readable_pngs(
    known_world: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = copy_world(known_world, tmp_path / "report")
    code, output = invoke("analyze", "report", "--skew-sample", "5", "-w", str(settings.workspace))
    assert code == 0, output
    report = (settings.data_dir / "analysis" / "report.md").read_text()
    for heading in (
        "## Online store export",
        "## Train/serve skew",
        "## Coverage per feature view",
        "## Behaviour rates by position and material",
        "## Training-set label rates",
        "## Item embedding norms and versions",
    ):
        assert heading in report
    assert "no mismatches" in report
    plots = sorted(p.name for p in (settings.data_dir / "analysis" / "plots").glob("*.png"))
    assert plots == [
        "behaviour_rates.png",
        "event_mix.png",
        "feature_distributions.png",
        "freshness.png",
        "label_rates.png",
    ]
    for name in plots:
        assert f"(plots/{name})" in report
        pixels = matplotlib.image.imread(settings.data_dir / "analysis" / "plots" / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.std() > 0.05  # not a blank canvas
