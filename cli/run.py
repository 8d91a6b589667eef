"""`mmrec run`: every stage of the main job after the data is in, in order, each skipped when
it already ran on the same inputs.

The stages are the stage CLIs' own commands, called with their defaults, so `mmrec run` does
exactly what running them one by one does. A stage's inputs are named by a token chain: the
first stage's token is a digest of the raw data's manifest, the served-event log, the feature
repo, the run's options and the code version (`code_version`: the stages' Python sources and
the installed dependencies); every stage that runs gets a new token, and a stage is skipped
when the token of the stage before it is the one it last ran on. So new data or new code
re-runs everything, a failed stage re-runs from itself, and a finished run re-runs nothing.
The record is `data/artifacts/run.json`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from packaging.requirements import Requirement

from content.cli import encode
from feature_pipelines.cli import features_apply, features_build, features_materialize
from index.cli import build as index_build
from mmrec import event_log
from mmrec.cli_common import Workspace, cli_settings, console, exits_on_user_error
from mmrec.io import read_json, write_json
from mmrec.settings import Settings
from mmrec.world_manifest import read_world_manifest
from training.cli import TestDays, TestShare, ValidDays, ValidShare, build_sets, rank, recall


@dataclass(frozen=True)
class RunOptions:
    """What `mmrec run` passes on to the stages (the rest are each stage's defaults)."""

    valid_days: int | None = None  # days before the test days held out (None: by share)
    test_days: int | None = None  # last days of the data held out for testing (None: by share)
    valid_share: float = 0.1  # share of the events before the test days held out
    test_share: float = 0.1  # share of the newest events held out for testing

    def digest(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


Stage = Callable[[Path, RunOptions], None]
STAGES: tuple[tuple[str, Stage], ...] = (
    ("features build", lambda ws, o: features_build(workspace=ws)),
    ("content encode", lambda ws, o: encode(workspace=ws)),
    ("features apply", lambda ws, o: features_apply(workspace=ws)),
    ("features materialize", lambda ws, o: features_materialize(workspace=ws)),
    (
        "train build-sets",
        lambda ws, o: build_sets(
            valid_days=o.valid_days,
            test_days=o.test_days,
            valid_share=o.valid_share,
            test_share=o.test_share,
            workspace=ws,
        ),
    ),
    ("train rank", lambda ws, o: rank(workspace=ws)),
    ("train recall", lambda ws, o: recall(workspace=ws)),
    ("index build", lambda ws, o: index_build(workspace=ws)),
)


# The packages whose code the stages run: every project package the commands above import,
# directly or through others (tests/test_run.py checks it against the import graph).
STAGE_PACKAGES = (
    "cli", "content", "datagen", "feature_pipelines", "index", "mmrec", "models", "training",
    "training_sets",
)  # fmt: skip
DISTRIBUTION = "mmrec"


def code_version(packages: Iterable[str]) -> str:
    """A digest of the code the stages run: the Python sources of `packages` as this process
    imports them and the installed versions of the project's dependencies.

    Content, not git state or a version string: it is the same in any clean clone or installed
    copy of the same code (no timestamps, no .git needed) and changes with any edit, a
    `git pull` or a dependency upgrade, uncommitted edits included."""
    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        # a namespace package (no __init__.py) lists its folder once per sys.path entry that
        # holds it, plus the editable install's path hook (not a folder): each folder once
        locations = {Path(p).resolve() for p in spec.submodule_search_locations or ()}
        for folder in sorted(path for path in locations if path.is_dir()):
            for path in sorted(folder.rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(folder).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    for requirement in map(Requirement, metadata.requires(DISTRIBUTION) or ()):
        if requirement.marker is None:  # the runtime dependencies, not an extra's
            try:
                digest.update(f"{requirement.name}=={metadata.version(requirement.name)}".encode())
            except metadata.PackageNotFoundError:
                continue
    return digest.hexdigest()


def data_token(settings: Settings, options: RunOptions) -> str:
    """A digest of what the first stage reads: the raw data's manifest, the served-event log's
    segments (`POST /events`), the feature repo, the run's options and the code version."""
    read_world_manifest(settings)  # no data: say which command makes it
    digest = hashlib.sha256((settings.raw_dir / "manifest.json").read_bytes())
    digest.update(event_log.fingerprint(settings).encode())
    digest.update(options.digest().encode())
    digest.update(code_version(STAGE_PACKAGES).encode())
    for path in sorted(settings.feature_repo.glob("*.py")) + sorted(
        settings.feature_repo.glob("*.yaml")
    ):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def run_stages(
    settings: Settings,
    options: RunOptions | None = None,
    force: bool = False,
    stages: tuple[tuple[str, Stage], ...] = STAGES,
) -> dict[str, str]:
    """Run the stages in order; returns {stage: "ran" | "skipped"}."""
    record_path = settings.artifacts_dir / "run.json"
    record: dict[str, dict[str, str]] = (
        {} if force or not record_path.exists() else read_json(record_path)
    )
    options = options or RunOptions()
    token = data_token(settings, options)
    outcome = {}
    for i, (name, stage) in enumerate(stages, start=1):
        title = f"[{i}/{len(stages)}] mmrec {name}"
        done = record.get(name, {})
        if done.get("inputs") == token:
            console.print(f"[dim]{title}: skipped (already ran on these inputs and code)[/]")
            token, outcome[name] = done["token"], "skipped"
            continue
        console.rule(title)
        started = time.perf_counter()
        stage(settings.workspace, options)
        new_token = uuid.uuid4().hex
        record[name] = {"inputs": token, "token": new_token}
        write_json(record, record_path)  # after each stage: a failure later keeps this one
        console.print(f"[green]{title}: done in {time.perf_counter() - started:.1f} s[/]")
        token, outcome[name] = new_token, "ran"
    return outcome


@exits_on_user_error
def run(
    valid_days: ValidDays = None,
    test_days: TestDays = None,
    valid_share: ValidShare = 0.1,
    test_share: TestShare = 0.1,
    force: Annotated[
        bool, typer.Option(help="Run every stage, even those that ran on the same inputs.")
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Every stage after the data is in: features -> content -> Feast -> training sets ->
    rank -> recall -> index. Re-running skips what already ran on the same inputs."""
    settings = cli_settings(workspace)
    options = RunOptions(valid_days, test_days, valid_share, test_share)
    outcome = run_stages(settings, options, force)
    ran = [name for name, what in outcome.items() if what == "ran"]
    console.print(
        f"{len(ran)} stage(s) ran, {len(outcome) - len(ran)} skipped; "
        "next: `mmrec serve demo` (or `bentoml build` + `bentoml serve`)"
    )
