"""`mmrec analyze ...` and `mmrec sql`: the DuckDB analysis from the command line.

The root (`cli/main.py`) mounts them: `app.add_typer(analyze_app, name="analyze")` and
`app.command("sql")(sql)`; `sql` carries its own user-error handling, so any Typer app can mount it.
Exit codes: 0 ok, 1 the skew check found mismatches, 2 bad input or a missing step.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from mmrec.cli_common import (
    OfflineStore,
    OnlineStore,
    StageApp,
    Workspace,
    cli_settings,
    console,
    exits_on_user_error,
)

analyze_app = StageApp(
    help="DuckDB analysis: views over every layer, ready queries, skew check, report."
)

MaxRows = Annotated[int, typer.Option("--max-rows", help="Print at most this many rows.")]


def _frame_table(frame: pd.DataFrame, title: str | None, max_rows: int) -> Table:
    """A rich table of a DataFrame; NULL for missing values, long lists folded."""
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.head(max_rows).itertuples(index=False):
        table.add_row(*("NULL" if _missing(v) else str(v) for v in row))
    if len(frame) > max_rows:
        table.caption = f"{len(frame) - max_rows} more rows (--max-rows)"
    return table


def _missing(value) -> bool:
    return value is None or (not hasattr(value, "__len__") and pd.isna(value))


def _store(settings):
    from mmrec.feast_store import open_store

    return open_store(settings)


@exits_on_user_error
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the analysis views, e.g. 'SELECT ...'.")],
    workspace: Workspace = None,
    max_rows: MaxRows = 100,
) -> None:
    """Run SQL in a DuckDB session over the workspace's views and print the result."""
    from analysis.pipeline import open_session
    from analysis.queries import run_sql

    frame = run_sql(open_session(cli_settings(workspace, needs="repo")), query)
    console.print(_frame_table(frame, None, max_rows))


@analyze_app.command("views")
def analyze_views(
    chunk: Annotated[int, typer.Option(help="Entities per online read.")] = 1000,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Export the online store to Parquet and write data/analysis/views.sql."""
    from analysis.pipeline import refresh

    settings = cli_settings(workspace, online_store, offline_store, needs="repo")
    refreshed = refresh(settings, _store(settings), chunk=chunk)
    for stats in refreshed.export.values():
        console.print(
            f"{stats.view:>20}: {stats.found}/{stats.entities} entities online, "
            f"exported in {stats.seconds:.2f} s"
        )
    console.print(
        f"views: {refreshed.views_file}\n"
        f"plain DuckDB: cd {settings.workspace} && duckdb -init data/analysis/views.sql"
    )


@analyze_app.command("query")
def analyze_query(
    name: Annotated[
        str | None, typer.Argument(help="A ready query (analysis/sql/NAME.sql); omit to list.")
    ] = None,
    workspace: Workspace = None,
    max_rows: MaxRows = 100,
) -> None:
    """Run a ready query, or list them with the views each one lacks."""
    from analysis import queries
    from analysis.pipeline import open_session

    con = open_session(cli_settings(workspace, needs="repo"))
    if name is None:
        listing = pd.DataFrame(
            [
                {
                    "query": q.name,
                    "title": q.title,
                    "missing views": ", ".join(q.missing(con)) or "-",
                }
                for q in map(queries.load, queries.names())
            ]
        )
        console.print(_frame_table(listing, "ready queries", max_rows))
        return
    frame = queries.run(con, name)
    console.print(_frame_table(frame, queries.load(name).title, max_rows))


def _skew(settings, store, sample: int, seed: int, end: str | None, views: list[str] | None):
    from analysis import AnalysisError, catalog
    from analysis.skew import check_skew
    from mmrec.world_manifest import time_or_world_end

    infos = catalog.from_store(store)
    unknown = sorted(set(views or []) - {info.name for info in infos})
    if unknown:
        raise AnalysisError(f"unknown feature views {unknown}; known: {[i.name for i in infos]}")
    chosen = [info for info in infos if not views or info.name in views]
    until = time_or_world_end(settings, end)
    return check_skew(store, chosen, until, sample=sample, seed=seed)


SkewSample = Annotated[int, typer.Option(help="Entities sampled per feature view.")]
SkewSeed = Annotated[int, typer.Option(help="Sampling seed.")]
SkewEnd = Annotated[
    str | None,
    typer.Option(help="The materialization end, ISO with zone (default: the world's end)."),
]


@analyze_app.command("skew")
def analyze_skew(
    sample: SkewSample = 200,
    seed: SkewSeed = 0,
    end: SkewEnd = None,
    view: Annotated[
        list[str] | None, typer.Option(help="Feature view(s) to check; all when omitted.")
    ] = None,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Compare online values with offline point-in-time values; exit 1 on any mismatch."""
    settings = cli_settings(workspace, online_store, offline_store, needs="repo")
    frame = _skew(settings, _store(settings), sample, seed, end, view)
    bad = frame[frame.mismatches > 0]
    console.print(_frame_table(frame if bad.empty else bad, "train/serve skew", len(frame)))
    if not bad.empty:
        console.print(f"[bold red]{len(bad)} feature(s) differ between online and offline[/]")
        raise typer.Exit(code=1)
    console.print(f"no mismatches over {len(frame)} features")


@analyze_app.command("report")
def analyze_report(
    skew_sample: Annotated[
        int, typer.Option(help="Entities per view for the skew section; 0 skips it.")
    ] = 200,
    seed: SkewSeed = 0,
    end: SkewEnd = None,
    chunk: Annotated[int, typer.Option(help="Entities per online read.")] = 1000,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Export, run every ready query and the skew check, write data/analysis/report.md + PNGs."""
    from analysis.pipeline import open_session, refresh
    from analysis.report import write_report

    settings = cli_settings(workspace, online_store, offline_store, needs="repo")
    store = _store(settings)
    refreshed = refresh(settings, store, chunk=chunk)
    skew = _skew(settings, store, skew_sample, seed, end, None) if skew_sample > 0 else None
    path = write_report(settings, open_session(settings), refreshed.export, skew)
    console.print(f"report: {path}")
