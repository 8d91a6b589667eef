"""`mmrec serve ...`: build the bento and answer a real request through `bentoml serve`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmrec.cli_common import StageApp, Workspace, cli_settings, console, fail

app = StageApp(help="BentoML service: build the bento, serve it, send a request.")


@app.command("demo")
def demo(
    user_id: Annotated[int, typer.Option(help="User to recommend for.")] = 3,
    scene: Annotated[str, typer.Option(help="home, inner or detail.")] = "home",
    k: Annotated[int, typer.Option(help="Items to return (1..200).")] = 10,
    context_sku_id: Annotated[int | None, typer.Option(help="SKU on screen (S2V seed).")] = None,
    workspace: Workspace = None,
) -> None:
    """`bentoml build`, `bentoml serve` the bento, POST /recommend once, print the answer, stop."""
    import httpx

    from serving.bento_process import BentoServer, build_bento, workspace_env
    from serving.schemas import RecommendRequest

    body = RecommendRequest(
        user_id=user_id, scene=scene, k=k, context_sku_id=context_sku_id
    ).model_dump(exclude_none=True)
    settings = cli_settings(workspace)
    env = workspace_env(settings)
    tag = build_bento(env)
    console.print(f"built bento {tag}")
    log_file = settings.artifacts_dir / "serving" / "bentoml-serve.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with BentoServer(tag, env, log_file) as server:
        console.print(f"bentoml serve {tag} at {server.url}; POST /recommend {json.dumps(body)}")
        response = httpx.post(f"{server.url}/recommend", json=body, timeout=60)
    if response.status_code != 200:
        raise fail(f"/recommend answered {response.status_code}: {response.text}")
    out = response.json()
    console.print_json(data=out)
    console.print(
        f"{len(out['items'])} items, {out['candidates']} candidates ranked, "
        f"{out['timings_ms']['total']:.1f} ms in the service"
    )


@app.command("pin")
def pin() -> None:
    """Write serving/requirements.lock.txt: the exact versions the bento ships (every package
    the project's dependencies need, as installed in this venv)."""
    from serving.bento_process import PINS_FILE, pinned_requirements

    pins = pinned_requirements()
    PINS_FILE.write_text(
        "# The bento's Python packages, pinned: `make pins` (mmrec serve pin) writes this file.\n"
        + "\n".join(pins)
        + "\n"
    )
    console.print(f"{len(pins)} packages pinned in {PINS_FILE}")
