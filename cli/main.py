"""`mmrec`: one command line for every stage.

The root only sets up logging and mounts what each stage's `<stage>/cli.py` defines; those
modules share `mmrec.cli_common` and never import this one. Heavy imports happen inside each
command.
"""

from __future__ import annotations

import logging
import warnings
from typing import Annotated

import typer

from analysis.cli import analyze_app, sql
from cli.init import init
from cli.run import run
from content.cli import app as content_app
from datagen.cli import generate
from feature_pipelines.cli import app as features_app
from index.cli import app as index_app
from ingest.cli import app as data_app
from mmrec.cli_common import show_user_error_tracebacks
from serving.cli import app as serve_app
from simulation.cli import simulate
from training.cli import app as train_app

app = typer.Typer(
    help="Multimodal content recommendation: data, features, models, index, serving.",
    no_args_is_help=True,
    # a traceback must not print local variables: they may hold a token or a password
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging; tracebacks of user errors too.")
    ] = False,
) -> None:
    show_user_error_tracebacks(verbose)
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


app.command("init")(init)
app.command()(generate)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(content_app, name="content")
app.add_typer(train_app, name="train")
app.add_typer(index_app, name="index")
app.add_typer(analyze_app, name="analyze")
app.add_typer(serve_app, name="serve")
app.command("sql")(sql)
app.command("run")(run)
app.command("simulate")(simulate)
