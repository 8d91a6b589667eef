"""The raw data's manifest (`data/raw/manifest.json`): which days the data covers and when it
ends. Every stage reads it here, so a missing world is one error with one fix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mmrec.errors import UserError
from mmrec.event_log import log_days
from mmrec.io import read_json
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES, CONTENT_MODALITIES, EVENT_TYPES, MATERIALS, RANKING_TASKS


class NoWorldError(UserError):
    """The workspace holds no raw data yet."""


def no_data_message(settings: Settings) -> str:
    """What to run when the workspace holds no raw data yet."""
    ws = settings.workspace
    return (
        f"no data in {settings.raw_dir}: run `mmrec data import --events EVENTS --items ITEMS "
        f"-w {ws}` (your data) or `mmrec generate -w {ws}` (the synthetic world) first"
    )


def read_world_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest's fields; NoWorldError naming the command to run when there is none."""
    path = settings.raw_dir / "manifest.json"
    if not path.exists():
        raise NoWorldError(no_data_message(settings))
    return read_json(path)


def world_days(settings: Settings) -> list[str]:
    """The data's days, ISO dates in order: the raw data's and the served-event log's
    (`mmrec.event_log`: events `POST /events` accepted since the last import)."""
    return sorted({*read_world_manifest(settings)["days"], *log_days(settings)})


def world_end(settings: Settings) -> datetime:
    """The end of the data's last day (raw or served): the clock the data is 'now' at."""
    end = datetime.fromisoformat(read_world_manifest(settings)["end"])
    served = log_days(settings)
    if served:
        after_last = datetime.fromisoformat(served[-1]).replace(tzinfo=UTC) + timedelta(days=1)
        end = max(end, after_last)
    return end


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


@dataclass(frozen=True)
class DataProfile:
    """What the data carries, as the manifest declares it (the generator and `mmrec data
    import` write it), so every stage adapts without code edits.

    categories: the item category vocabulary; its order is the index order of every category
    vector (CDR affinities, tag probabilities, one-hots). event_types: the behaviours present.
    image / frames: whether the catalog has covers / video frames (text is always there).
    has_skus: whether there is a product domain (S2V recall, cross-domain interest).
    """

    categories: tuple[str, ...] = CATEGORIES
    event_types: tuple[str, ...] = EVENT_TYPES
    image: bool = True
    frames: bool = True
    has_skus: bool = True
    materials: tuple[str, ...] = MATERIALS

    @property
    def ranking_tasks(self) -> tuple[str, ...]:
        """The ranking tasks whose behaviour occurs in the data (click always: it is the
        task every other one hangs off)."""
        return tuple(t for t in RANKING_TASKS if t == "click" or t in self.event_types)

    @property
    def content_modalities(self) -> tuple[str, ...]:
        """The content modalities the catalog carries: text always, visual with covers."""
        return CONTENT_MODALITIES if self.image else ("text",)


def data_profile(settings: Settings) -> DataProfile:
    """The manifest's profile; fields an older manifest lacks take the synthetic world's."""
    manifest = read_world_manifest(settings)
    modalities = manifest.get("modalities", {})
    present = manifest.get("events_by_type")
    return DataProfile(
        categories=tuple(manifest.get("categories", CATEGORIES)),
        event_types=tuple(t for t in EVENT_TYPES if present is None or present.get(t, 0) > 0),
        image=bool(modalities.get("image", True)),
        frames=bool(modalities.get("frames", True)),
        has_skus=bool(manifest.get("has_skus", True)),
        materials=tuple(manifest.get("materials", MATERIALS)),
    )
