"""`mmrec`: one command line for every stage. Heavy imports happen inside each command."""

from __future__ import annotations

import logging
import warnings
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmrec.cli_errors import fail

app = typer.Typer(
    help="Multimodal content recommendation: data, features, models, index, serving.",
    no_args_is_help=True,
)
features_app = typer.Typer(
    help="Offline pipelines and the Feast feature store.", no_args_is_help=True
)
app.add_typer(features_app, name="features")
console = Console()

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


def _settings(workspace: Path | None, online_store: str | None = None):
    from dataclasses import replace

    from mmrec.settings import Settings

    settings = Settings.from_env(workspace)
    return replace(settings, online_store=online_store) if online_store else settings


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean 'the input or the order of steps is wrong', not a bug."""
    from datagen.world import WorldExistsError
    from feature_pipelines.run import NoWorldError
    from mmrec.feast_store import FeatureStoreError

    return (ValueError, FileNotFoundError, FeatureStoreError, NoWorldError, WorldExistsError)


def _mount_stage_apps() -> None:
    """Each stage owns its sub-commands in <stage>/cli.py; mounted here, imported lazily there."""
    from analysis.cli import analyze_app, sql
    from content.cli import app as content_app
    from index.cli import app as index_app
    from serving.cli import app as serve_app
    from training.cli import app as train_app

    app.add_typer(content_app, name="content")
    app.add_typer(train_app, name="train")
    app.add_typer(index_app, name="index")
    app.add_typer(analyze_app, name="analyze")
    app.add_typer(serve_app, name="serve")
    app.command("sql")(sql)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if (
        not verbose
    ):  # Feast logs every registry refresh at INFO; libraries warn about their own deps
        logging.getLogger("feast").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="feast")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="feast")


@app.command()
def generate(
    scale: Annotated[str, typer.Option(help="tiny | small | bench.")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 7,
    force: Annotated[bool, typer.Option(help="Replace a world of another scale or seed.")] = False,
    workspace: Workspace = None,
) -> None:
    """Generate the synthetic e-commerce world (catalog, media, event logs, hidden truth)."""
    from datagen.world import generate_world

    try:
        manifest = generate_world(_settings(workspace), scale, seed, force=force)
    except _user_errors() as err:
        raise fail(str(err)) from None
    console.print(
        f"world {manifest['scale']} seed={manifest['seed']}: {manifest['n_users']} users, "
        f"{manifest['n_items']} items, {manifest['n_skus']} SKUs, {manifest['n_events']} events "
        f"over {len(manifest['days'])} days"
    )


@features_app.command("build")
def features_build(
    day: Annotated[
        list[str] | None,
        typer.Option(help="World day(s) YYYY-MM-DD to (re)build; all when omitted."),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Run the event-to-feature pipelines into the offline sources (idempotent per day)."""
    from feature_pipelines.run import build_features

    try:
        written = build_features(_settings(workspace), day)
    except _user_errors() as err:
        raise fail(str(err)) from None
    for source, rows in written.items():
        console.print(f"{source:>20}: {rows} rows")


@features_app.command("apply")
def features_apply(workspace: Workspace = None, online_store: OnlineStore = None) -> None:
    """Register the feature repo's definitions (runs `feast apply` in feature_repo/)."""
    from mmrec.feast_store import apply_repo

    try:
        console.print(apply_repo(_settings(workspace, online_store)) or "applied")
    except _user_errors() as err:
        raise fail(str(err)) from None


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None, typer.Option(help="ISO time to materialize up to (default: the world's end).")
    ] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="Feature view(s); all when omitted.")
    ] = None,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
) -> None:
    """Load the latest feature values within each view's TTL into the online store."""
    from mmrec.feast_store import materialize, open_store, world_end

    settings = _settings(workspace, online_store)
    try:
        until = datetime.fromisoformat(end) if end else world_end(settings)
        if until.tzinfo is None:
            raise ValueError(f"--end {end!r} needs a time zone, e.g. {end}+00:00")
        windows = materialize(open_store(settings), until, view)
    except _user_errors() as err:
        raise fail(str(err)) from None
    for name, ttl in windows.items():
        console.print(
            f"{name:>20}: materialized ({until - ttl:%Y-%m-%d %H:%M}, {until:%Y-%m-%d %H:%M}]"
        )


@features_app.command("show")
def features_show(
    user_id: Annotated[int, typer.Option(help="User to read.")],
    item_id: Annotated[int, typer.Option(help="Item to read.")],
    service: Annotated[str, typer.Option(help="Feature service: recall or ranking.")] = "ranking",
    workspace: Workspace = None,
    online_store: OnlineStore = None,
) -> None:
    """Read one (user, item) row of a feature service from the online store."""
    from mmrec.feast_store import open_store, world_end

    settings = _settings(workspace, online_store)
    try:
        store = open_store(settings)
        try:
            feature_service = store.get_feature_service(service)
        except Exception as err:  # Feast raises its own FeatureServiceNotFoundException
            raise ValueError(f"unknown feature service {service!r}: {err}") from None
        row = {
            "user_id": user_id,
            "item_id": item_id,
            "request_ts": int(world_end(settings).timestamp()),
        }
        values = store.get_online_features(features=feature_service, entity_rows=[row]).to_dict()
    except _user_errors() as err:
        raise fail(str(err)) from None
    table = Table(title=f"online features: service={service} user={user_id} item={item_id}")
    table.add_column("feature")
    table.add_column("value", overflow="fold")
    for name, column in values.items():
        table.add_row(name, repr(column[0]))
    console.print(table)


_mount_stage_apps()
