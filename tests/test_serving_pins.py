"""Pinned packages (issue #20): serving/requirements.lock.txt, which
`[tool.bentoml.build.python] requirements_txt` packs, holds exactly the versions installed
here for every package the project's dependencies need; requirements-dev.lock.txt, which
`make venv` installs under, does the same for the dev venv (`.[dev,spark,milvus,baselines]`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mmrec.settings import REPO_ROOT
from serving.bento_process import DEV_EXTRAS, DEV_PINS_FILE, PINS_FILE, pinned_requirements


def _pins(path: Path) -> list[str]:
    """The `name==version` lines of a lock file (its comment lines left out)."""
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(
    ("pins_file", "extras"), [(PINS_FILE, ()), (DEV_PINS_FILE, DEV_EXTRAS)], ids=["bento", "dev"]
)
def test_the_pin_list_is_what_this_venv_has_installed(
    pins_file: Path, extras: tuple[str, ...]
) -> None:
    pinned = _pins(pins_file)
    installed = pinned_requirements(extras)
    assert pinned == installed, (
        f"{pins_file.name} differs from the venv (run `make pins`): "
        f"only pinned {sorted(set(pinned) - set(installed))[:5]}, "
        f"only installed {sorted(set(installed) - set(pinned))[:5]}"
    )
    names = {line.split("==")[0] for line in pinned}
    assert {"bentoml", "torch", "feast", "redis", "duckdb", "pymilvus"} <= names


def test_the_dev_pins_hold_the_bento_pins_and_the_dev_tools() -> None:
    bento, dev = set(_pins(PINS_FILE)), set(_pins(DEV_PINS_FILE))
    assert bento < dev
    assert {"pytest", "pyspark", "ruff"} <= {line.split("==")[0] for line in dev}


def test_make_venv_installs_under_the_dev_pins() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"PIN_CONSTRAINTS ?= -c {DEV_PINS_FILE.name}" in makefile
    assert f"$(PIN_CONSTRAINTS) -e '.[{','.join(DEV_EXTRAS)}]'" in makefile


def test_the_bento_build_packs_the_pin_list() -> None:
    build = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["bentoml"]["build"]
    assert REPO_ROOT / build["python"]["requirements_txt"] == PINS_FILE
