"""`mmrec generate`: the synthetic world. One command, mounted by the root `mmrec` app."""

from __future__ import annotations

from typing import Annotated

import typer

from mmrec.cli_common import Workspace, cli_settings, console, exits_on_user_error


@exits_on_user_error
def generate(
    scale: Annotated[str, typer.Option(help="tiny | small | bench.")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 7,
    modality_taste: Annotated[
        str,
        typer.Option(
            help="mixed: every user cares a bit about pictures, titles and popularity. "
            "strong: most users care mostly about one, pictures and titles twice as much "
            "(the test bed for per-user modality interest)."
        ),
    ] = "mixed",
    force: Annotated[
        bool, typer.Option(help="Replace a world of another scale, seed or taste.")
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Generate the synthetic e-commerce world (catalog, media, event logs, hidden truth)."""
    from datagen.world import generate_world

    manifest = generate_world(
        cli_settings(workspace, needs="create"),
        scale,
        seed,
        force=force,
        modality_taste=modality_taste,
    )
    console.print(
        f"world {manifest['scale']} seed={manifest['seed']} "
        f"modality_taste={manifest['modality_taste']}: {manifest['n_users']} users, "
        f"{manifest['n_items']} items, {manifest['n_skus']} SKUs, {manifest['n_events']} events "
        f"over {len(manifest['days'])} days"
    )
