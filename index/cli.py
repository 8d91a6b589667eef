"""`mmrec index ...`: build the content index from the trained item tower, serve a milvus-lite
file to many processes, show what the alias points at."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mmrec.cli_common import StageApp, Workspace, cli_settings, console, fail
from mmrec.vocab import LATEST_RECALL_MODEL

app = StageApp(help="Milvus content-vector index: build, serve, status.")

Uri = Annotated[
    str | None,
    typer.Option(
        "--uri", help="milvus-lite .db file or http://host:port (default: MMREC_MILVUS_URI or "
        "<workspace>/data/index/milvus.db)."
    ),
]  # fmt: skip


@app.command()
def build(
    model: Annotated[
        str, typer.Option(help="Recall model in the BentoML store whose item tower encodes.")
    ] = LATEST_RECALL_MODEL,
    uri: Uri = None,
    workspace: Workspace = None,
) -> None:
    """Encode every published item with the recall model's item tower and swap the index in."""
    from index.build import build_index

    report = build_index(cli_settings(workspace), model, uri)
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
    workspace: Workspace = None,
) -> None:
    """Serve one milvus-lite file at http://HOST:PORT until Ctrl-C (many processes, one file)."""
    from index.server import LiteServer

    path = db_file or Path(cli_settings(workspace, needs="nothing").index_uri)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = LiteServer(path, host=host, port=port or None).start()
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
    workspace: Workspace = None,
) -> None:
    """List the built versions behind ALIAS and which one readers get now."""
    from datetime import UTC, datetime

    from index.collections import list_versions
    from index.connection import open_index

    settings = cli_settings(workspace, needs="nothing")
    target = uri or settings.index_uri
    versions = list_versions(open_index(settings, target), alias)
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
