"""PNG plots of the ready queries' results (matplotlib, headless Agg backend).

Each function takes the DataFrame of one ready query (`analysis/sql/<name>.sql`) and a path,
draws one figure and returns the path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: plots are files

import matplotlib.pyplot as plt
import pandas as pd

from mmrec.vocab import MATERIALS, POSITIONS


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _ordered(frame: pd.DataFrame, order: tuple[str, ...]) -> pd.DataFrame:
    """Rows (an index of vocabulary words) in vocabulary order, unknown words last."""
    known = [name for name in order if name in frame.index]
    return frame.loc[known + [name for name in frame.index if name not in order]]


def ctr_by_position_material(behaviour_rates: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: CTR per position, one bar per material."""
    table = behaviour_rates.pivot(index="position", columns="material", values="ctr")
    table = _ordered(table, POSITIONS)[[m for m in MATERIALS if m in table.columns]]
    fig, ax = plt.subplots(figsize=(7, 4))
    table.plot.bar(ax=ax, rot=0)
    ax.set(title="CTR by position and material", xlabel="position", ylabel="clicks / impressions")
    ax.legend(title="material")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def traffic_mix(event_mix: pd.DataFrame, path: Path) -> Path:
    """Stacked impressions per position and material, one panel per traffic source."""
    sources = sorted(event_mix.source.dropna().unique())
    fig, axes = plt.subplots(
        1, len(sources), figsize=(5 * len(sources), 4), sharey=True, squeeze=False
    )
    for ax, source in zip(axes[0], sources, strict=True):
        part = event_mix[event_mix.source == source]
        table = part.pivot(index="position", columns="material", values="impressions").fillna(0)
        table = _ordered(table, POSITIONS)[[m for m in MATERIALS if m in table.columns]]
        table.plot.bar(ax=ax, stacked=True, rot=0, legend=source == sources[-1])
        ax.set(title=f"source = {source}", xlabel="position", ylabel="impressions")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Impressions by source, position and material")
    return _save(fig, path)


def ctr_distribution(feature_distributions: pd.DataFrame, path: Path) -> Path:
    """Boxes of item CTR (7 days) per material from the query's quantiles (p10..p90)."""
    rows = feature_distributions.set_index("material")
    rows = _ordered(rows, MATERIALS)
    stats = [
        {
            "label": f"{material}\n(n={int(row['items'])})",
            "whislo": row["ctr_7d_p10"],
            "q1": row["ctr_7d_p25"],
            "med": row["ctr_7d_p50"],
            "q3": row["ctr_7d_p75"],
            "whishi": row["ctr_7d_p90"],
            "fliers": [],
        }
        for material, row in rows.iterrows()
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bxp(stats, showfliers=False)
    ax.set(
        title="Item CTR (7 days) at the world's end by material\nbox: p25-p75, whiskers: p10-p90",
        ylabel="smoothed CTR",
    )
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def freshness(freshness_rows: pd.DataFrame, path: Path) -> Path:
    """Per feature view: median and p90 age (hours) of each entity's newest row."""
    layer = "online" if (freshness_rows.layer == "online").any() else "offline"
    table = freshness_rows[freshness_rows.layer == layer].set_index("feature_view")
    table = table[["p50_lag_h", "p90_lag_h"]].rename(
        columns={"p50_lag_h": "p50", "p90_lag_h": "p90"}
    )
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(table) + 1.5))
    table.plot.barh(ax=ax)
    ax.set_xscale("symlog", linthresh=1)  # hours span 0 (daily snapshots) to ~10^4 (static)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.0f h", padding=3, fontsize=8)
    ax.set_xlim(0, max(1.0, float(table.to_numpy().max())) * 10)  # room for the labels
    ax.set(
        title=f"Freshness at the world's end ({layer} store)",
        xlabel="age of the entity's newest row (hours, symlog)",
        ylabel="",
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def label_rates(label_rate_rows: pd.DataFrame, path: Path) -> Path:
    """Positive rate per label, one bar group per training set."""
    table = label_rate_rows.pivot(index="label", columns="training_set", values="rate")
    fig, ax = plt.subplots(figsize=(7, 4))
    table.plot.bar(ax=ax, rot=0)
    ax.set(title="Training-set label rates", xlabel="label", ylabel="positive rate")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
