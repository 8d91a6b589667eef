"""Workspaces are made by the tool (issue #28): `mmrec init DIR` makes one (and is safe to run
again), refuses a folder holding other things, `mmrec data import -w NEW` makes its own, and
every stage checks its workspace before any work starts, naming the command that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from mmrec.settings import REPO_ROOT
from tests.test_ingest import event_rows, write_csv, write_items


def mmrec(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_init_makes_a_workspace_once_and_refuses_other_folders(tmp_path: Path) -> None:
    ws = tmp_path / "my_ws"
    code, output = mmrec("init", str(ws))
    assert code == 0 and "made workspace" in output
    repo = sorted(p.name for p in (REPO_ROOT / "feature_repo").iterdir() if p.name != "__pycache__")
    assert sorted(p.name for p in (ws / "feature_repo").iterdir()) == repo  # no caches
    assert (ws / "data").is_dir()
    (ws / "data" / "keep.txt").write_text("mine")
    before = tree(ws)
    code, output = mmrec("init", str(ws))
    assert code == 0 and "already a workspace: nothing changed" in output
    assert tree(ws) == before
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    code, output = mmrec("init", str(other))
    assert code == 2 and "not an mmrec workspace and is not empty (it holds cat.jpg)" in output
    assert tree(other) == ["cat.jpg"]


def test_a_folder_an_earlier_import_left_without_a_repo_is_completed(tmp_path: Path) -> None:
    ws = tmp_path / "old"
    (ws / "data" / "raw").mkdir(parents=True)
    code, output = mmrec("run", "-w", str(ws))
    assert code == 2 and f"run `mmrec init {ws}` first" in output
    assert tree(ws) == ["data", "data/raw"]  # nothing ran
    assert mmrec("init", str(ws))[0] == 0
    assert (ws / "feature_repo" / "feature_store.yaml").is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["features", "build"],
        ["features", "apply"],
        ["content", "encode"],
        ["train", "build-sets"],
        ["index", "build"],
        ["serve", "demo"],
    ],
)
def test_every_stage_checks_the_workspace_before_any_work(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    code, output = mmrec(*command, "-w", str(missing))
    assert code == 2 and f"`mmrec init {missing}`" in output and not missing.exists()
    empty = tmp_path / "empty"
    assert mmrec("init", str(empty))[0] == 0
    before = tree(empty)
    code, output = mmrec(*command, "-w", str(empty))
    assert code == 2 and f"mmrec data import --events EVENTS --items ITEMS -w {empty}" in output
    assert f"mmrec generate -w {empty}" in output
    assert tree(empty) == before


def test_data_import_makes_the_workspace_it_is_given(tmp_path: Path) -> None:
    events = write_csv(event_rows(), tmp_path / "in" / "events.csv")
    items = write_items(tmp_path / "in")
    ws = tmp_path / "my_ws"
    code, output = mmrec(
        "data", "import", "--events", str(events), "--items", str(items), "-w", str(ws)
    )
    assert code == 0, output
    assert "made workspace" in output and (ws / "feature_repo" / "feature_store.yaml").is_file()
    assert (ws / "data" / "raw" / "manifest.json").is_file()
    code, output = mmrec(
        "data", "import", "--events", str(events), "--items", str(items), "-w", str(ws)
    )
    assert code == 0 and "made workspace" not in output  # an existing workspace: kept
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    code, output = mmrec(
        "data", "import", "--events", str(events), "--items", str(items), "-w", str(junk)
    )
    assert code == 2 and "not an mmrec workspace" in output and tree(junk) == ["notes.txt"]


def test_the_analysis_needs_a_workspace_not_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, output = mmrec("sql", "SELECT 42 AS answer", "-w", str(missing))
    assert code == 2 and f"`mmrec init {missing}`" in output
    assert mmrec("init", str(missing))[0] == 0
    code, output = mmrec("sql", "SELECT 42 AS answer", "-w", str(missing))
    assert code == 0 and "42" in output  # the views open over whatever there is
