"""`mmrec simulate`: simulated shoppers through the served bento, for N days, per seed; then the
A/B report (simulation/report.py) with its plots."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import Workspace, cli_settings, console, exits_on_user_error
from mmrec.errors import UserError
from simulation.arms import ARMS


@exits_on_user_error
def simulate(
    days: Annotated[int, typer.Option(help="Simulated days (each a new data day).")] = 3,
    users: Annotated[
        int, typer.Option(help="Sampled users, each opening the feed once a day.")
    ] = 1500,
    k: Annotated[int, typer.Option(help="Items a feed shows (1..200).")] = 10,
    scene: Annotated[str, typer.Option(help="The feed's page: home or inner.")] = "home",
    seeds: Annotated[
        int, typer.Option(help="Runs with seeds 0..N-1 (user sample, arms, clicks).")
    ] = 1,
    retrain_every: Annotated[
        int, typer.Option(help="Retrain through `mmrec run` every N days (0: never).")
    ] = 1,
    arms: Annotated[str, typer.Option(help=f"Comma-separated: {', '.join(ARMS)}.")] = ",".join(
        ARMS
    ),
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder (default: data/artifacts/simulation in the workspace)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Report file prefix (default: simulation-<scale>).")
    ] = None,
    check_parity: Annotated[
        bool,
        typer.Option(
            help="After each day, rebuild the features from scratch and compare them with the "
            "loop's (offline partitions and every online value)."
        ),
    ] = False,
    keep_workspaces: Annotated[
        bool,
        typer.Option(help="Keep each seed's copy of the workspace (data/simulation/seed-N)."),
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Simulated shoppers through the served bento: an online A/B of the full pipeline,
    the ranker without GMF, popularity, random and two oracles, for N days through the loop
    (bento -> /events -> features -> training -> index -> bento). Needs a world made by
    `mmrec generate` (and `mmrec run`); the workspace itself is left unchanged."""
    from mmrec.world_manifest import read_world_manifest
    from simulation.arms import parse_arms
    from simulation.loop import SimulationConfig
    from simulation.loop import simulate as simulate_days
    from simulation.report import summarize_run, verdict_text, write_report
    from simulation.truth import HiddenWorld

    settings = cli_settings(workspace)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    HiddenWorld.load(settings)  # imported data: refuse now
    chosen = parse_arms(arms)
    configs = [
        SimulationConfig(
            days, users, k, scene, seed, retrain_every, chosen, check_parity=check_parity
        )
        for seed in range(seeds)
    ]
    manifest = read_world_manifest(settings)
    world = f"{manifest['scale']} world, seed {manifest['seed']}"
    if manifest.get("modality_taste", "mixed") != "mixed":
        world += f", {manifest['modality_taste']} modality taste"
    name = name or f"simulation-{manifest['scale']}"
    out = out or settings.artifacts_dir / "simulation"
    work = settings.data_dir / "simulation"
    runs = []
    for config in configs:
        console.rule(f"seed {config.seed}: {days} simulated day(s), {len(chosen)} arms")
        run_dir = work / f"seed-{config.seed}"
        run = simulate_days(settings, config, run_dir)
        runs.append(summarize_run(run))
        _save_records(run, run_dir / "records.parquet")
        if not keep_workspaces:
            shutil.rmtree(run["workspace"], ignore_errors=True)
    command = (
        f"mmrec simulate --days {days} --users {users} --k {k} --scene {scene} --seeds {seeds} "
        f"--retrain-every {retrain_every}"
        + ("" if len(chosen) == len(ARMS) else f" --arms {arms}")
        + (" --check-parity" if check_parity else "")
    )
    report = {
        "command": command,
        "world": world,
        "config": {
            "days": days, "users": users, "k": k, "scene": scene, "seeds": seeds,
            "retrain_every": retrain_every, "arms": [arm.name for arm in chosen],
            "check_parity": check_parity,
        },
        "runs": runs,
    }  # fmt: skip
    paths = write_report(report, out, name)
    for run in runs:
        for verdict in run["separation"]:
            console.print(f"seed {run['seed']}, all days: {verdict_text(verdict)}")
    console.print(f"report: {paths[1]} (+ .json, {len(paths) - 2} plots in {out})")


def _save_records(run: dict, path: Path) -> None:
    """Every simulated visit (user, day, arm, items shown and clicked), for analysis."""
    import pandas as pd

    from mmrec.io import write_parquet

    write_parquet(pd.DataFrame(run["records"]), path)
