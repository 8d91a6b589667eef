"""`mmrec data import`: bring a user's events and catalog in through the data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mmrec.cli_common import StageApp, Workspace, cli_settings, console, fail

app = StageApp(help="Bring data in: validate against the contract and import.")


@app.command("import")
def import_command(
    events: Annotated[
        Path | None, typer.Option(help="Events: a CSV/Parquet file or a folder of them.")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="The item catalog (file or folder).")] = None,
    skus: Annotated[Path | None, typer.Option(help="SKUs (optional).")] = None,
    users: Annotated[Path | None, typer.Option(help="Users (optional).")] = None,
    adapter: Annotated[
        str | None,
        typer.Option(help="A known data set instead of --events/--items: movielens-100k."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail instead of dropping unusable rows.")] = False,
    replace: Annotated[
        bool,
        typer.Option(
            help="Start from empty raw data instead of appending (over a generated world)."
        ),
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Check files against the data contract and write the raw layout every stage reads.

    The contract: docs/data-contract.md. Importing newer events later appends them; the same
    files again change nothing."""
    from ingest.importer import import_data

    if adapter is not None and (events is not None or items is not None):
        raise fail("--adapter replaces --events/--items: give one or the other")
    if adapter is None and (events is None or items is None):
        raise fail("give --events and --items (or --adapter movielens-100k)")
    report = import_data(
        cli_settings(workspace, needs="create"),
        events,
        items,
        skus,
        users,
        adapter=adapter,
        strict=strict,
        replace=replace,
    )
    table = Table(
        title="import"
        + (" (unchanged: these files were imported before)" if report.unchanged else "")
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("details")
    for name, rows in report.rows_read.items():
        table.add_row(f"rows read: {name}", str(rows), "")
    table.add_row(
        "events written",
        str(report.events_written),
        f"{report.events_added} new, {report.already_present} already imported",
    )
    table.add_row("days", str(report.days), f"{report.first_day} .. {report.last_day}")
    for entity, ids in report.ids.items():
        if ids["kind"] == "string":
            table.add_row(f"{entity} ids: new keys", str(ids["new_keys"]), "strings, mapped")
        elif ids["kind"] == "int":
            table.add_row(f"{entity} ids", "", "integers: the keys")
    for reason, dropped in report.dropped.items():
        table.add_row(f"dropped: {reason}", str(dropped.count), "\n".join(dropped.examples))
    for what, counted in (
        ("missing", report.images_missing),
        ("unreadable", report.images_unreadable),
    ):
        table.add_row(f"images {what}", str(counted.count), "\n".join(counted.examples))
    for kind, columns in report.ignored_columns.items():
        table.add_row(f"ignored columns: {kind}", str(len(columns)), ", ".join(columns))
    table.add_row("seconds", f"{report.elapsed_s:.1f}", "")
    console.print(table)
