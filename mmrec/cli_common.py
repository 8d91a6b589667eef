"""What every stage's CLI shares: the common options, the settings built from them, and the
one place where a user error becomes a red line on stderr and exit code 2.

Only `UserError` is a user error. A library's ValueError or FileNotFoundError is a bug unless
the code that handed it the user's input turned it into a UserError there (a datetime option,
a user's file, a Feast name), so a bug keeps its traceback (rich, without local variables:
they may hold a secret). `mmrec -v` prints the traceback of a user error too.

Stage CLIs (`<stage>/cli.py`) build their apps with `StageApp`; the root (`cli/main.py`) mounts
them and nothing imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.workspace import check_workspace, init_workspace

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

Workspace = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Folder with feature_repo/ and data/ (default: MMREC_WORKSPACE or the repo).",
    ),
]
OnlineStore = Annotated[
    str | None,
    typer.Option("--online-store", help="sqlite (default) or redis (MMREC_ONLINE_STORE)."),
]
OfflineStore = Annotated[
    str | None,
    typer.Option("--offline-store", help="duckdb (default) or spark (MMREC_OFFLINE_STORE)."),
]


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; raise the returned Exit (code 2)."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


# What a command needs of its workspace, checked before any work starts: "data" (a feature
# repo and raw data: every stage after the data is in), "repo" (a feature repo, data or not:
# the analysis, which shows what there is), "create" (made when missing: the commands that
# bring data in), "nothing" (a file or server named by an option will do).
Needs = Literal["data", "repo", "create", "nothing"]


def cli_settings(
    workspace: Path | None,
    online_store: str | None = None,
    offline_store: str | None = None,
    *,
    needs: Needs = "data",
) -> Settings:
    """The settings of one command: the environment, overridden by the command's options,
    with the workspace checked (or made) as `needs` says (mmrec/workspace.py)."""
    settings = Settings.from_env(workspace)
    stores = {"online_store": online_store, "offline_store": offline_store}
    settings = settings.replace(**{name: value for name, value in stores.items() if value})
    if needs == "create" and init_workspace(settings.workspace):
        console.print(f"made workspace {settings.workspace} (feature_repo/ and data/)")
    elif needs in ("data", "repo"):
        check_workspace(settings, data=needs == "data")
    return settings


class _Tracebacks:
    """Whether a user error prints its traceback: the root command's `-v` turns it on."""

    of_user_errors = False


def show_user_error_tracebacks(on: bool) -> None:
    """Print a user error's traceback before its line (the root's `-v`, cli/main.py)."""
    _Tracebacks.of_user_errors = on


def exits_on_user_error(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a `UserError` prints one line and exits 2 (with `-v`, after its
    traceback); any other exception is a bug and propagates with its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as err:
            if _Tracebacks.of_user_errors:
                err_console.print_exception(show_locals=False)
            raise fail(str(err)) from None

    return wrapper


class StageApp(typer.Typer):
    """A Typer app whose every command turns user errors into exit code 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(no_args_is_help=True, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(function: Callable) -> Callable:
            register(exits_on_user_error(function))
            return function

        return decorator
