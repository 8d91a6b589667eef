"""`mmrec index ...`: build the content index from the trained item tower, serve a milvus-lite
file to many processes, show what the alias points at."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmrec.cli_errors import fail

app = typer.Typer(help="Milvus content-vector index: build, serve, status.", no_args_is_help=True)
console = Console()

Uri = Annotated[
    str | None,
    typer.Option(
        "--uri", help="milvus-lite .db file or http://host:port (default: MMREC_MILVUS_URI or "
        "<workspace>/data/index/milvus.db)."
    ),
]  # fmt: skip
WorkspaceOpt = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder with data/ (default: the repo).")
]


def _uri(uri: str | None, workspace: Path | None) -> str:
    from index.connection import default_uri
    from mmrec.settings import Settings

    return uri or default_uri(Settings.from_env(workspace))


@app.command()
def build(
    model: Annotated[
        str, typer.Option(help="Recall model in the BentoML store whose item tower encodes.")
    ] = "recall:latest",
    uri: Uri = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Encode every published item with the recall model's item tower and swap the index in."""
    from index.build import build_index
    from mmrec.feast_store import FeatureStoreError
    from mmrec.settings import Settings

    try:
        settings = Settings.from_env(workspace)
        report = build_index(settings, model, _uri(uri, workspace))
    except (ValueError, FileNotFoundError, FeatureStoreError) as err:
        raise fail(str(err)) from None
    console.print(
        f"{report.collection}: {report.rows} items x {report.dim}-d in {report.seconds:.1f} s"
        + (f"; dropped {', '.join(report.dropped)}" if report.dropped else "")
    )


@app.command()
def serve(
    db_file: Annotated[
        Path | None, typer.Option(help="milvus-lite file to serve (default: the workspace's).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve one milvus-lite file at http://HOST:PORT until Ctrl-C (many processes, one file)."""
    from index.errors import VectorIndexError
    from index.server import LiteServer

    path = db_file or Path(_uri(None, workspace))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = LiteServer(path, host=host, port=port or None).start()
    except VectorIndexError as err:
        raise fail(str(err)) from None
    console.print(
        f"serving {server.db_file} at {server.uri} (MMREC_MILVUS_URI={server.uri}); Ctrl-C stops"
    )
    try:
        stop.wait()
    finally:
        server.stop()


@app.command()
def status(
    uri: Uri = None,
    alias: Annotated[str, typer.Option(help="Alias whose versions to list.")] = "content_vectors",
    workspace: WorkspaceOpt = None,
) -> None:
    """List the built versions behind ALIAS and which one readers get now."""
    from datetime import UTC, datetime

    from index.collections import list_versions
    from index.errors import VectorIndexError

    target = _uri(uri, workspace)
    try:
        versions = list_versions(target, alias)
    except VectorIndexError as err:
        raise fail(str(err)) from None
    if not versions:
        raise fail(f"no versions of {alias!r} at {target}; build the index first")
    table = Table(title=f"{alias} at {target}")
    for col in ("collection", "active", "rows", "dim", "index", "built (UTC)"):
        table.add_column(col)
    for record, active in versions:
        built = datetime.fromtimestamp(record.built_at_ns / 1e9, tz=UTC)
        table.add_row(
            record.collection, "yes" if active else "", str(record.rows), str(record.dim),
            record.spec.index_type, f"{built:%Y-%m-%d %H:%M:%S}",
        )  # fmt: skip
    console.print(table)
