"""Whose fault it is, on the command line: a `UserError` is one red line and exit 2 (its
traceback too under `-v`); anything else is a bug and keeps its traceback, without local
variables (they may hold a secret)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from mmrec.cli_common import StageApp
from mmrec.errors import UserError
from mmrec.settings import REPO_ROOT

# The real root app (cli/main.py) with one more stage whose commands fail, run in a child
# process: its exception hook and the root's -v are what a user gets.
SCRIPT = textwrap.dedent(
    """
    import sys
    from cli.main import app
    from mmrec.cli_common import StageApp
    from mmrec.errors import UserError

    stage = StageApp()

    @stage.command("user-error")
    def user_error() -> None:
        raise UserError("--day 2026-13-01 is not a day: use YYYY-MM-DD")

    @stage.command("bug")
    def bug() -> None:
        token = "".join(reversed("lacol-a-ni-terc3s-detnalp"))  # a local, not in the source
        raise KeyError(f"a bug of {len(token)} characters")

    app.add_typer(stage, name="stage")
    sys.argv = ["mmrec", *sys.argv[1:]]
    app()
    """
)
SECRET = "planted-s3cret-in-a-local"


def _mmrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_a_user_error_is_one_line_and_exit_2() -> None:
    result = _mmrec("stage", "user-error")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --day 2026-13-01 is not a day: use YYYY-MM-DD"


def test_verbose_shows_the_traceback_of_a_user_error_too() -> None:
    result = _mmrec("-v", "stage", "user-error")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "UserError: --day 2026-13-01" in result.stderr
    assert result.stderr.rstrip().endswith("error: --day 2026-13-01 is not a day: use YYYY-MM-DD")


@pytest.mark.parametrize("verbose", [(), ("-v",)])
def test_a_bug_prints_its_traceback_without_locals(verbose: tuple[str, ...]) -> None:
    result = _mmrec(*verbose, "stage", "bug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError" in result.stderr
    assert "a bug of 25 characters" in result.stderr
    assert SECRET not in result.stderr


def test_a_library_value_error_is_a_bug_not_a_user_error() -> None:
    """A ValueError nobody turned into a UserError where the input was checked propagates
    (exit 1 with its traceback), instead of passing for the user's fault."""
    stage = StageApp()

    @stage.command("parse")
    def parse() -> None:
        int("not a number")

    @stage.command("other")
    def other() -> None:
        pass

    result = CliRunner().invoke(stage, ["parse"])
    assert result.exit_code == 1
    assert type(result.exception) is ValueError
    assert not isinstance(result.exception, UserError)
