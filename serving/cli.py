"""`mmrec serve ...`: build the bento and answer a real request through `bentoml serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import StageApp, Workspace, cli_settings, console, fail
from mmrec.errors import UserError

app = StageApp(help="BentoML service: build the bento, serve it, send a request.")


@contextmanager
def served(workspace: Path | None) -> Iterator[str]:
    """`bentoml build` the workspace's bento and `bentoml serve` it; yields its URL."""
    from serving.bento_process import BentoServer, build_bento, workspace_env

    settings = cli_settings(workspace)
    env = workspace_env(settings)
    tag = build_bento(env)
    console.print(f"built bento {tag}")
    log_file = settings.artifacts_dir / "serving" / "bentoml-serve.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with BentoServer(tag, env, log_file) as server:
        console.print(f"bentoml serve {tag} at {server.url}")
        yield server.url


@app.command("demo")
def demo(
    user_id: Annotated[
        str, typer.Option(help="User to recommend for, by the data's own id.")
    ] = "3",
    scene: Annotated[str, typer.Option(help="home, inner or detail.")] = "home",
    k: Annotated[int, typer.Option(help="Items to return (1..200).")] = 10,
    context_sku_id: Annotated[
        str | None, typer.Option(help="SKU on screen (S2V seed), by its own id.")
    ] = None,
    workspace: Workspace = None,
) -> None:
    """`bentoml build`, `bentoml serve` the bento, POST /recommend once, print the answer, stop."""
    import httpx
    from pydantic import ValidationError

    from mmrec.id_map import WorkspaceIds
    from serving.schemas import RecommendRequest

    # the ids as the data has them (an integer in an integer-id workspace), checked before
    # the bento is built
    ids = WorkspaceIds.load(cli_settings(workspace))
    user = ids.user.parse(user_id, "--user-id")
    sku = None if context_sku_id is None else ids.sku.parse(context_sku_id, "--context-sku-id")
    try:
        request = RecommendRequest(user_id=user, scene=scene, k=k, context_sku_id=sku)
    except ValidationError as err:
        raise UserError(f"a request the service would refuse (400): {err}") from None
    body = request.model_dump(exclude_none=True)
    with served(workspace) as url:
        console.print(f"POST {url}/recommend {json.dumps(body)}")
        response = httpx.post(f"{url}/recommend", json=body, timeout=60)
    if response.status_code != 200:
        raise fail(f"/recommend answered {response.status_code}: {response.text}")
    out = response.json()
    console.print_json(data=out)
    console.print(
        f"{len(out['items'])} items, {out['candidates']} candidates ranked, "
        f"{out['timings_ms']['total']:.1f} ms in the service"
    )


@app.command("screenshot")
def screenshot(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("docs/feed.png"),
    user_id: Annotated[
        str | None,
        typer.Option(help="User to show, by the data's own id (default: the page's first)."),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Serve the bento, open its feed page in Chromium (Playwright) and save a screenshot."""
    from serving.feed_browser import feed_page, wait_for_refresh

    with served(workspace) as url, feed_page(f"{url}/feed/") as page:
        if user_id is not None:
            stamp = page.evaluate("() => document.body.dataset.loaded")
            page.fill("#user", user_id)
            page.click("#go")
            wait_for_refresh(page, stamp)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        cards = page.locator("#feed .card").count()
    console.print(f"wrote {out}: {cards} recommended items on the feed page")


@app.command("pin")
def pin() -> None:
    """Write serving/requirements.lock.txt, the exact versions the bento ships (every package
    the project's dependencies need, as installed in this venv), and requirements-dev.lock.txt,
    the same for the dev venv that `make venv` installs under."""
    from serving.bento_process import DEV_EXTRAS, DEV_PINS_FILE, PINS_FILE, pinned_requirements

    for path, extras, what in (
        (PINS_FILE, (), "The bento's Python packages"),
        (DEV_PINS_FILE, DEV_EXTRAS, "The dev venv's packages (`make venv` installs under them)"),
    ):
        pins = pinned_requirements(extras)
        text = f"# {what}, pinned: `make pins` (mmrec serve pin) writes this file.\n"
        text += "\n".join(pins) + "\n"
        # an unchanged file keeps its mtime: the venv stamp depends on the dev lock
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        console.print(f"{len(pins)} packages pinned in {path}")
