"""`mmrec init DIR`: make a workspace, as `feast init` makes a repo (mmrec/workspace.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import console, exits_on_user_error
from mmrec.workspace import init_workspace


@exits_on_user_error
def init(
    directory: Annotated[Path, typer.Argument(help="The workspace folder (made when missing).")],
) -> None:
    """Make DIR a workspace: its own copy of the feature repo and an empty data/ folder.

    Safe to run again on a workspace (nothing changes); refused on a folder that holds other
    things."""
    root = directory.resolve()
    if init_workspace(root):
        console.print(f"made workspace {root}: feature_repo/ (the repository's copy) and data/")
    else:
        console.print(f"{root} is already a workspace: nothing changed")
    console.print(
        f"next: `mmrec data import --events EVENTS --items ITEMS -w {directory}` (your data) "
        f"or `mmrec generate -w {directory}` (the synthetic world)"
    )
