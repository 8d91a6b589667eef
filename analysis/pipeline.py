"""The steps `mmrec analyze` chains: read the registry, export the online store, write views."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analysis import catalog, views
from analysis.catalog import FeatureViewInfo
from analysis.online_export import ExportStats, export_online
from mmrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refreshed:
    catalog: list[FeatureViewInfo]
    export: dict[str, ExportStats]
    views_file: Path


def refresh(settings: Settings, store, chunk: int = 1000) -> Refreshed:
    """Save the registry's catalog, export the online store, write `data/analysis/views.sql`."""
    infos = catalog.from_store(store)
    catalog.save(settings, infos)
    present = [info for info in infos if views.has_files(info.source_path)]
    stats = export_online(settings, store, present, chunk=chunk)
    return Refreshed(infos, stats, views.write(settings, infos))


def open_session(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB session over the workspace with the catalog the last refresh saved (if any)."""
    return views.connect(settings, catalog.load(settings))
