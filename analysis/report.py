"""The analysis report: every ready query as a markdown table, plots beside them, and the skew
check, written to `data/analysis/report.md` with its PNGs in `data/analysis/plots/`.

A query whose views the workspace lacks (no training sets yet, no content embeddings yet) is
listed as skipped with the views it needs, so the report is always complete about what it
could not say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from analysis import plots, queries
from analysis.online_export import ExportStats
from mmrec.settings import Settings

log = logging.getLogger(__name__)

# Report order: query name -> the plot drawn from its result (None: table only).
SECTIONS: dict[str, Callable[[pd.DataFrame, Path], Path] | None] = {
    "coverage": None,
    "null_rates": None,
    "freshness": plots.freshness,
    "event_mix": plots.traffic_mix,
    "behaviour_rates": plots.ctr_by_position_material,
    "feature_distributions": plots.ctr_distribution,
    "label_rates": plots.label_rates,
    "top_categories": None,
    "embedding_norms": None,
}


def report_dir(settings: Settings) -> Path:
    return settings.data_dir / "analysis"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt="g") if len(frame) else "_(no rows)_"


def _export_section(export: dict[str, ExportStats]) -> list[str]:
    frame = pd.DataFrame(
        [
            {
                "feature_view": s.view,
                "entities": s.entities,
                "online": s.found,
                "seconds": round(s.seconds, 3),
            }
            for s in export.values()
        ]
    )
    total = round(sum(s.seconds for s in export.values()), 3)
    return [
        "## Online store export",
        "",
        f"Read through Feast's `get_online_features` into `data/analysis/online/` in {total} s.",
        "",
        _table(frame),
        "",
    ]


def _skew_section(skew: pd.DataFrame) -> list[str]:
    bad = skew[skew.mismatches > 0]
    verdict = (
        "no mismatches: the online store equals the offline point-in-time values."
        if bad.empty
        else f"**{len(bad)} feature(s) differ** between online and offline."
    )
    compared = int(skew.compared.max()) if len(skew) else 0
    return [
        "## Train/serve skew",
        "",
        f"Up to {compared} sampled entities per view, online read vs point-in-time join at the "
        f"materialization end: {verdict}",
        "",
        _table(bad if not bad.empty else skew.drop(columns=["example"])),
        "",
    ]


def write_report(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    export: dict[str, ExportStats] | None = None,
    skew: pd.DataFrame | None = None,
) -> Path:
    """Run every ready query, draw the plots and write `report.md`; returns its path."""
    out = report_dir(settings)
    plot_dir = out / "plots"
    lines = [
        "# mmrec analysis report",
        "",
        f"Workspace `{settings.workspace}`, generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "Every table below is a query in `analysis/sql/`; rerun one with "
        "`mmrec analyze query NAME` or the plain `duckdb` CLI (see the README).",
        "",
    ]
    if export:
        lines += _export_section(export)
    if skew is not None:
        lines += _skew_section(skew)
    for name, plot in SECTIONS.items():
        query = queries.load(name)
        lines += [f"## {query.title}", "", f"`analysis/sql/{name}.sql`", ""]
        missing = query.missing(con)
        if missing:
            lines += [f"_Skipped: needs the views {', '.join(missing)}._", ""]
            continue
        frame = queries.run(con, name)
        if plot is not None and len(frame):
            image = plot(frame, plot_dir / f"{name}.png")
            lines += [f"![{query.title}](plots/{image.name})", ""]
        lines += [_table(frame), ""]
    path = out / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    log.info("report written to %s", path)
    return path
