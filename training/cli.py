"""`mmrec train ...`: training sets (and, as they land, model training)."""

from __future__ import annotations

from typing import Annotated

import typer

from mmrec.cli import Workspace, _fail, _settings, _user_errors, console

app = typer.Typer(help="Training sets and models.", no_args_is_help=True)


@app.command("build-sets")
def build_sets(
    chunk_rows: Annotated[
        int, typer.Option(help="Entity rows per Feast call (memory bound).")
    ] = 200_000,
    negative_ratio: Annotated[int, typer.Option(help="Recall negatives per positive.")] = 4,
    popularity_alpha: Annotated[
        float, typer.Option(help="0 = uniform negatives; 0.75 = popularity-corrected.")
    ] = 0.0,
    valid_days: Annotated[
        int, typer.Option(help="Days before the test days held out for validation.")
    ] = 1,
    test_days: Annotated[int, typer.Option(help="Last world days held out for testing.")] = 2,
    seed: Annotated[int, typer.Option(help="Negative-sampling seed.")] = 0,
    workspace: Workspace = None,
) -> None:
    """Build the ranking and recall training sets through Feast's feature services."""
    from training.build_sets import BuildConfig, build_ranking_set, build_recall_set

    try:
        config = BuildConfig(
            chunk_rows, valid_days, test_days, negative_ratio, popularity_alpha, seed
        )
        settings = _settings(workspace)
        for name, build in (("ranking", build_ranking_set), ("recall", build_recall_set)):
            manifest = build(settings, config)
            console.print(f"{name}: rows {manifest['rows']} label rates {manifest['label_rates']}")
    except _user_errors() as err:
        raise _fail(str(err)) from None
