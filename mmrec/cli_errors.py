"""How every `mmrec` command reports a user error: one red line on stderr and exit code 2.

Its own module so each stage's CLI (index, serving, content, ...) can use it without importing
`mmrec.cli`, which mounts those CLIs."""

from __future__ import annotations

import typer
from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; raise the returned Exit (code 2)."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)
