"""The documentation site: the settings table is the code's, and the site builds with no
warning (broken links, missing anchors, pages outside the nav)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mmrec.settings import FROM_ENVIRONMENT, env_var
from mmrec.settings_reference import CONFIGURATION_PAGE, settings_table, with_table

MKDOCS = str(Path(sys.executable).with_name("mkdocs"))


def test_the_committed_settings_table_is_the_generated_one() -> None:
    page = CONFIGURATION_PAGE.read_text()
    assert with_table(page) == page, "the settings table is stale: run `make docs`"


def test_the_table_has_a_row_for_every_variable() -> None:
    table = settings_table()
    for name in FROM_ENVIRONMENT:
        assert f"| `{env_var(name)}` | `{name}` |" in table


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    root = CONFIGURATION_PAGE.parent.parent
    result = subprocess.run(
        [MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
