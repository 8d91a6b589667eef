"""`mmrec serve ...`: build the bento and answer a real request through `bentoml serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mmrec.cli_errors import fail

app = typer.Typer(help="BentoML service: build the bento, serve it, send a request.")
console = Console()


@app.command("demo")
def demo(
    user_id: Annotated[int, typer.Option(help="User to recommend for.")] = 3,
    scene: Annotated[str, typer.Option(help="home, inner or detail.")] = "home",
    k: Annotated[int, typer.Option(help="Items to return (1..200).")] = 10,
    context_sku_id: Annotated[int | None, typer.Option(help="SKU on screen (S2V seed).")] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", "-w", help="Folder with data/ (default: repo).")
    ] = None,
) -> None:
    """`bentoml build`, `bentoml serve` the bento, POST /recommend once, print the answer, stop."""
    import httpx

    from mmrec.settings import Settings
    from serving.bento_process import BentoError, BentoServer, build_bento, workspace_env
    from serving.schemas import RecommendRequest

    try:
        body = RecommendRequest(
            user_id=user_id, scene=scene, k=k, context_sku_id=context_sku_id
        ).model_dump(exclude_none=True)
        settings = Settings.from_env(workspace)
        env = workspace_env(settings)
        tag = build_bento(env)
        console.print(f"built bento {tag}")
        log_file = settings.artifacts_dir / "serving" / "bentoml-serve.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with BentoServer(tag, env, log_file) as server:
            console.print(
                f"bentoml serve {tag} at {server.url}; POST /recommend {json.dumps(body)}"
            )
            response = httpx.post(f"{server.url}/recommend", json=body, timeout=60)
    except (ValueError, BentoError) as err:
        raise fail(str(err)) from None
    if response.status_code != 200:
        raise fail(f"/recommend answered {response.status_code}: {response.text}")
    out = response.json()
    console.print_json(data=out)
    console.print(
        f"{len(out['items'])} items, {out['candidates']} candidates ranked, "
        f"{out['timings_ms']['total']:.1f} ms in the service"
    )
