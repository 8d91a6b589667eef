"""The bento ships pinned packages (issue #20): serving/requirements.lock.txt, which
`[tool.bentoml.build.python] requirements_txt` packs, holds exactly the versions installed
here for every package the project's dependencies need."""

from __future__ import annotations

import tomllib

from mmrec.settings import REPO_ROOT
from serving.bento_process import PINS_FILE, pinned_requirements


def test_the_pin_list_is_what_this_venv_has_installed() -> None:
    pinned = [line for line in PINS_FILE.read_text().splitlines() if not line.startswith("#")]
    installed = pinned_requirements()
    assert pinned == installed, (
        f"{PINS_FILE.name} differs from the venv (run `make pins`): "
        f"only pinned {sorted(set(pinned) - set(installed))[:5]}, "
        f"only installed {sorted(set(installed) - set(pinned))[:5]}"
    )
    names = {line.split("==")[0] for line in pinned}
    assert {"bentoml", "torch", "feast", "redis", "duckdb", "pymilvus"} <= names


def test_the_bento_build_packs_the_pin_list() -> None:
    build = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["bentoml"]["build"]
    assert REPO_ROOT / build["python"]["requirements_txt"] == PINS_FILE
