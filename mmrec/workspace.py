"""A workspace is a folder holding `feature_repo/` (its own copy of the repository's Feast
repo) and `data/`. `mmrec init DIR` makes one, as `feast init` makes a repo; `mmrec data
import` and `mmrec generate` make theirs when the folder does not exist yet; every other
stage checks its workspace before any work starts (`mmrec.cli_common.cli_settings`), so a
missing repo or missing data is one message naming the command that fixes it, not a
traceback three stages in.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mmrec.errors import UserError
from mmrec.settings import REPO_ROOT, Settings
from mmrec.world_manifest import NoWorldError, no_data_message

REPO_TEMPLATE = REPO_ROOT / "feature_repo"  # what `mmrec init` copies
FEATURE_REPO, DATA = "feature_repo", "data"
# The file that makes a folder a Feast repo (every profile's yaml sits beside it).
STORE_YAML = "feature_store.yaml"


class WorkspaceError(UserError):
    """The folder is not a workspace, or cannot become one; the message says what to run."""


def is_workspace(root: Path) -> bool:
    """Whether `root` holds a feature repo (`feature_repo/feature_store.yaml`)."""
    return (root / FEATURE_REPO / STORE_YAML).is_file()


def init_workspace(root: Path) -> bool:
    """Make `root` a workspace: a copy of the repository's feature repo (without caches) and
    an empty `data/`. Returns False when it was one already (nothing changes: safe to run
    again). A folder holding only `data/` (an import made it before workspaces were made by
    the tool) gets its feature repo; any other non-empty folder is refused, so nothing of
    the user's is mixed in or overwritten.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} is a file, not a folder: give a new or empty folder")
    if is_workspace(root):
        (root / DATA).mkdir(exist_ok=True)
        return False
    if root.is_dir():
        others = sorted(p.name for p in root.iterdir() if p.name != DATA)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise WorkspaceError(
                f"{root} is not an mmrec workspace and is not empty (it holds {shown}): "
                "give a new or empty folder, e.g. `mmrec init my_ws`"
            )
    if not (REPO_TEMPLATE / STORE_YAML).is_file():
        raise WorkspaceError(
            f"no feature repo to copy at {REPO_TEMPLATE}: run mmrec from a clone of the "
            "repository (`pip install -e .`)"
        )
    root.mkdir(parents=True, exist_ok=True)
    # copied beside its place and renamed in: an interrupted copy leaves no half repo
    staging = Path(tempfile.mkdtemp(prefix=".feature_repo-", dir=root))
    try:
        shutil.copytree(
            REPO_TEMPLATE,
            staging / FEATURE_REPO,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        (staging / FEATURE_REPO).rename(root / FEATURE_REPO)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / DATA).mkdir(exist_ok=True)
    return True


def check_workspace(settings: Settings, *, data: bool = True) -> None:
    """Raise a UserError naming the fix when the workspace has no feature repo or (with
    `data`) no raw data yet; cheap (two stats), so every stage runs it first."""
    root = settings.workspace
    if not root.exists():
        raise WorkspaceError(
            f"no workspace at {root}: make it with `mmrec init {root}` (or bring data in with "
            f"`mmrec data import --events EVENTS --items ITEMS -w {root}`, which makes it)"
        )
    if not is_workspace(root):
        raise WorkspaceError(
            f"{root} is not an mmrec workspace (no {FEATURE_REPO}/{STORE_YAML}): run "
            f"`mmrec init {root}` first"
        )
    if data and not (settings.raw_dir / "manifest.json").exists():
        raise NoWorldError(no_data_message(settings))
