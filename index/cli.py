"""`mmrec index ...`: build the content index from the trained item tower, serve it (a
milvus-lite file to many processes, or a Milvus server), show what the alias points at."""

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


ENGINES = ("lite", "standalone")


@app.command()
def serve(
    engine: Annotated[
        str,
        typer.Option(
            help="lite: one milvus-lite file shared over a URI; standalone: a Milvus server "
            "(PyPI's `milvus` wheel, HNSW, token auth) with its data under the workspace."
        ),
    ] = "lite",
    db_file: Annotated[
        Path | None, typer.Option(help="lite: the milvus-lite file (default: the workspace's).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="standalone: the server's data (default: <workspace>/data/index/milvus-standalone)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="lite: address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="TCP port; 0 picks a free one (standalone: 19530 or the next free).")
    ] = 0,
    workspace: Workspace = None,
) -> None:
    """Serve the index at http://HOST:PORT until Ctrl-C: a milvus-lite file to many processes,
    or a Milvus server; prints the variables that point `mmrec index build` and the bento at it."""
    from index.server import LiteServer
    from index.standalone import StandaloneServer, default_data_dir

    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    settings = cli_settings(workspace, needs="nothing")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if engine == "lite":
        server = LiteServer(db_file or Path(settings.index_uri), host=host, port=port or None)
        where = server.db_file
    else:
        server = StandaloneServer(data_dir or default_data_dir(settings.data_dir), port or None)
        where = server.data_dir
    server.start()
    console.print(f"serving {where} at {server.uri}; Ctrl-C stops. Point clients at it:")
    for name, value in server.environment().items():
        console.print(f"export {name}={value}", soft_wrap=True)
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
