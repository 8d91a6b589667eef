"""The raw data's manifest (`data/raw/manifest.json`): which days the data covers and when it
ends. Every stage reads it here, so a missing world is one error with one fix."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mmrec.errors import UserError
from mmrec.io import read_json
from mmrec.settings import Settings


class NoWorldError(UserError):
    """The workspace holds no raw data yet."""


def read_world_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest's fields; NoWorldError naming the command to run when there is none."""
    path = settings.raw_dir / "manifest.json"
    if not path.exists():
        raise NoWorldError(f"no world in {settings.raw_dir}: run `mmrec generate` first")
    return read_json(path)


def world_days(settings: Settings) -> list[str]:
    """The data's days, ISO dates in order."""
    return list(read_world_manifest(settings)["days"])


def world_end(settings: Settings) -> datetime:
    """The end of the data's last day: the clock the world's data is 'now' at."""
    return datetime.fromisoformat(read_world_manifest(settings)["end"])


def time_or_world_end(settings: Settings, iso: str | None, option: str = "--end") -> datetime:
    """`iso` (an ISO time with a zone) as a datetime, or the world's end when None."""
    if iso is None:
        return world_end(settings)
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise UserError(
            f"{option} {iso!r} is not an ISO time, e.g. 2026-10-15T00:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        raise UserError(f"{option} {iso!r} needs a time zone, e.g. {iso}+00:00")
    return moment
