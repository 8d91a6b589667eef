"""`mmrec run` (cli/run.py): a stage is skipped only when its inputs AND the code that runs it
are those it last ran on, so an upgrade (a pull, an edit, a new dependency) is never skipped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import run
from mmrec.io import write_json
from mmrec.settings import Settings
from tests.test_layering import imported_packages


def test_the_code_version_covers_every_package_the_stages_import() -> None:
    assert set(run.STAGE_PACKAGES) == imported_packages("cli.run")


@pytest.fixture
def stage_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package standing in for the stages' code, importable and editable."""
    package = tmp_path / "code" / "fake_stage_code"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "rule.py").write_text("WINDOW_DAYS = 7\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setattr(run, "STAGE_PACKAGES", ("fake_stage_code",))
    yield package
    sys.modules.pop("fake_stage_code", None)


def test_an_edit_of_the_stages_code_re_runs_them(stage_code: Path, tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    write_json({"days": ["2026-10-01"]}, settings.raw_dir / "manifest.json")
    ran: list[str] = []
    stages = tuple((name, lambda ws, o, name=name: ran.append(name)) for name in ("a", "b"))

    assert run.run_stages(settings, stages=stages) == {"a": "ran", "b": "ran"}
    assert run.run_stages(settings, stages=stages) == {"a": "skipped", "b": "skipped"}
    (stage_code / "rule.py").write_text("WINDOW_DAYS = 30\n")  # an upgrade changed a rule
    assert run.run_stages(settings, stages=stages) == {"a": "ran", "b": "ran"}
    assert run.run_stages(settings, stages=stages) == {"a": "skipped", "b": "skipped"}
    assert ran == ["a", "b", "a", "b"]


def test_the_code_version_is_the_code_not_where_it_lies(tmp_path: Path) -> None:
    """Two copies of the same sources (two clones, a clone and a wheel) have one version."""
    for copy in ("one", "two"):
        package = tmp_path / copy / "same_code"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("X = 1\n")
    versions = set()
    for copy in ("one", "two"):
        sys.path.insert(0, str(tmp_path / copy))
        try:
            versions.add(run.code_version(("same_code",)))
        finally:
            sys.path.remove(str(tmp_path / copy))
            sys.modules.pop("same_code", None)
    assert len(versions) == 1


def test_the_code_version_is_the_same_from_any_folder(tmp_path: Path) -> None:
    """A `mmrec run` started anywhere (the console script in a data folder) and one started in
    the repo (pytest puts it on sys.path, so a namespace package lists its folder twice) see
    one version: a second run skips every stage."""
    code = "from cli.run import STAGE_PACKAGES, code_version; print(code_version(STAGE_PACKAGES))"
    elsewhere = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert elsewhere.stdout.strip() == run.code_version(run.STAGE_PACKAGES)
