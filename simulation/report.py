"""What the simulated experiment measured: per arm and day, the business's online figures with
95% confidence intervals, the gap to each oracle, and the loop's served latency.

The unit of the experiment is the user (arms are assigned by user), so every interval is a
percentile bootstrap over users: resample the arm's users with replacement, recompute the
figure (a ratio of sums for CTR and the cold shares, a mean for clicks per user), take the
2.5th and 97.5th percentiles. A gap to an oracle arm resamples both arms' users independently.
The ceilings are paired instead: for every visit the simulator also knows the expected clicks
of the best k items of the candidates the service recalled for that user (ranked arms) and of
the whole catalog, so "of ceiling" is the share of them the feed realised, user by user.
Coverage (distinct items shown) has no interval: a resample repeats users, so it would show
fewer distinct items than the arm did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.io import write_json
from simulation.arms import ARMS, ORACLES

RESAMPLES = 2000
LEVEL = 0.95
ALL_DAYS = "all"


@dataclass(frozen=True)
class Metric:
    title: str
    numerator: str  # a per-user column
    denominator: str | None  # a per-user column; None: the mean over users


METRICS: dict[str, Metric] = {
    "ctr": Metric("CTR (clicks / impressions)", "clicks", "impressions"),
    "expected_ctr": Metric(
        "expected CTR (mean true click probability)", "expected_clicks", "impressions"
    ),
    "clicks_per_user": Metric("clicks per user", "clicks", None),
    "cold_shown": Metric("share of impressions on cold items", "cold_impressions", "impressions"),
    "cold_clicked": Metric("share of clicks on cold items", "cold_clicks", "clicks"),
    # paired per user: what the feed got of what the same user's oracle feed would have got
    "of_candidate_ceiling": Metric(
        "expected clicks / the best k of its own candidates",
        "expected_clicks",
        "best_candidate_clicks",
    ),
    "of_catalog_ceiling": Metric(
        "expected clicks / the best k of the catalog", "expected_clicks", "best_catalog_clicks"
    ),
}
GAP_METRICS = ("ctr", "expected_ctr", "clicks_per_user")
COVERAGE = "coverage"
PLOTTED = (*METRICS, COVERAGE)
BASELINES = ("popularity", "random")  # what the full pipeline must beat
SEPARATED = ("ctr", "expected_ctr")  # the figures it must beat them on
EVENTS = "events"  # the client timings' label of POST /events (simulation/loop.py)


@dataclass(frozen=True)
class Estimate:
    value: float | None
    low: float | None
    high: float | None

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _statistic(
    numerator: np.ndarray, denominator: np.ndarray | None, rows: np.ndarray
) -> np.ndarray:
    """The figure of each resample (`rows`: (B, n) indexes); NaN where a denominator sums to 0."""
    top = numerator[rows].sum(axis=-1)
    bottom = denominator[rows].sum(axis=-1) if denominator is not None else rows.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)


def _resample_rows(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def bootstrap_ci(
    numerator: np.ndarray,
    denominator: np.ndarray | None = None,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """sum(numerator) / sum(denominator) over users (the mean of `numerator` when no
    denominator) with its percentile-bootstrap interval over users; a None value when there
    are no users or the denominator sums to 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = None if denominator is None else np.asarray(denominator, dtype=np.float64)
    n = len(numerator)
    everyone = np.arange(n)[None, :]
    if n == 0 or np.isnan(value := float(_statistic(numerator, denominator, everyone)[0])):
        return Estimate(None, None, None)
    stats = _statistic(
        numerator, denominator, _resample_rows(n, resamples, np.random.default_rng(seed))
    )
    low, high = np.nanpercentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(value, float(low), float(high))


def bootstrap_gap(
    a: tuple[np.ndarray, np.ndarray | None],
    b: tuple[np.ndarray, np.ndarray | None],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Estimate:
    """figure(a) - figure(b), each (numerator, denominator) per user of its arm, with a
    percentile-bootstrap interval resampling the two arms' users independently."""
    rng = np.random.default_rng(seed)
    parts = []
    for numerator, denominator in (a, b):
        numerator = np.asarray(numerator, dtype=np.float64)
        denominator = None if denominator is None else np.asarray(denominator, dtype=np.float64)
        n = len(numerator)
        if n == 0:
            return Estimate(None, None, None)
        value = float(_statistic(numerator, denominator, np.arange(n)[None, :])[0])
        parts.append((value, _statistic(numerator, denominator, _resample_rows(n, resamples, rng))))
    (value_a, stats_a), (value_b, stats_b) = parts
    if np.isnan(value_a) or np.isnan(value_b):
        return Estimate(None, None, None)
    low, high = np.nanpercentile(stats_a - stats_b, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(value_a - value_b, float(low), float(high))


def per_user(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, user): the counts summed over the records' days, the items shown."""
    columns = [c for m in METRICS.values() for c in (m.numerator, m.denominator) if c]
    counts = list(dict.fromkeys(columns))
    grouped = records.groupby(["arm", "user_id"], sort=True)
    out = grouped[counts].sum()
    out["items"] = grouped["items"].agg(lambda lists: [i for items in lists for i in items])
    return out.reset_index()


def _columns(users: pd.DataFrame, metric: Metric) -> tuple[np.ndarray, np.ndarray | None]:
    numerator = users[metric.numerator].to_numpy()
    return numerator, None if metric.denominator is None else users[metric.denominator].to_numpy()


def summarize_period(
    records: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """{arm: {users, impressions, clicks, coverage, <metric>: Estimate, gap_to_<oracle>:
    {<metric>: Estimate}}} over the records given (one day, or all days per user)."""
    users = per_user(records)
    by_arm = {arm: frame for arm, frame in users.groupby("arm", sort=False)}
    out: dict[str, Any] = {}
    for arm in (name for name in ARMS if name in by_arm):
        frame = by_arm[arm]
        summary: dict[str, Any] = {
            "users": len(frame),
            "impressions": int(frame.impressions.sum()),
            "clicks": int(frame.clicks.sum()),
            COVERAGE: len({i for items in frame["items"] for i in items}),
        }
        for name, metric in METRICS.items():
            summary[name] = bootstrap_ci(*_columns(frame, metric), resamples=resamples, seed=seed)
        for oracle in (o for o in ORACLES if o in by_arm and o != arm):
            summary[f"gap_to_{oracle}"] = {
                name: bootstrap_gap(
                    _columns(frame, METRICS[name]),
                    _columns(by_arm[oracle], METRICS[name]),
                    resamples=resamples,
                    seed=seed,
                )
                for name in GAP_METRICS
            }
        out[arm] = summary
    return out


def separation(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per figure of SEPARATED and baseline: whether the full pipeline's interval lies above
    the baseline's (no overlap)."""
    verdicts = []
    for metric in SEPARATED:
        full = summary.get("full", {}).get(metric)
        for baseline in BASELINES:
            other = summary.get(baseline, {}).get(metric)
            if full is None or other is None or None in (full.low, other.high):
                continue
            verdicts.append(
                {
                    "metric": metric,
                    "baseline": baseline,
                    "full": full,
                    "other": other,
                    "full_above": bool(full.low > other.high),
                }
            )
    return verdicts


def verdict_text(verdict: dict[str, Any]) -> str:
    """One line: the two intervals and whether they overlap."""
    word = "above, no overlap" if verdict["full_above"] else "the intervals overlap"
    return (
        f"{verdict['metric']}: full {verdict['full'].text()} vs {verdict['baseline']} "
        f"{verdict['other'].text()}: {word}"
    )


def summarize_run(run: dict[str, Any], resamples: int = RESAMPLES) -> dict[str, Any]:
    """Each simulated day's figures and all days' (per user over the days), and the
    separation of the full pipeline from the baselines over all days."""
    records = pd.DataFrame(run["records"])
    periods = {str(day): records[records.day == day] for day in sorted(records.day.unique())}
    periods[ALL_DAYS] = records
    summary = {
        period: summarize_period(frame, resamples, seed=run["seed"])
        for period, frame in periods.items()
    }
    return {
        "seed": run["seed"],
        "days": run["days"],
        "seconds": run["seconds"],
        "summary": summary,
        "separation": separation(summary[ALL_DAYS]),
        "latency": run["latency"],
    }


def _plain(value: Any) -> Any:
    """Estimates as dicts, for JSON."""
    if isinstance(value, Estimate):
        return asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _quantiles(summary: dict[str, Any]) -> str:
    return f"{_ms(summary.get('p50_ms'))} / {_ms(summary.get('p99_ms'))}"


def _latency_rows(latency: list[dict[str, Any]]) -> list[str]:
    """Per day and bento, what its /metrics said; per day and arm, what the client timed."""
    rows = [
        "| day | bento | /recommend answered | stage total p50 / p99 ms | recall p50 / p99 ms | rank p50 / p99 ms | HTTP /recommend p50 / p99 ms | HTTP /events p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    clients = []
    for entry in latency:
        stages = entry["served"].get("mmrec_stage_seconds", {})
        http = entry["served"].get("bentoml_service_request_duration_seconds", {})
        day = f"{entry['day']} ({entry['data_day']})"
        rows.append(
            f"| {day} | {entry['bento']} | {stages.get('total', {}).get('count', 0):.0f} "
            f"| {_quantiles(stages.get('total', {}))} | {_quantiles(stages.get('recall', {}))} "
            f"| {_quantiles(stages.get('rank', {}))} | {_quantiles(http.get('/recommend', {}))} "
            f"| {_quantiles(http.get('/events', {}))} |"
        )
        events = f"events ({entry['bento']} bento)"
        clients += [
            f"| {day} | {events if label == EVENTS else label} | {summary['count']} "
            f"| {_quantiles(summary)} |"
            for label, summary in entry["client"].items()
        ]
    return [
        *rows,
        "",
        "Client side (the simulator's own timing of each call, serialisation and loopback included):",
        "",
        "| day | arm (or events) | calls | p50 / p99 ms |",
        "|---|---|---|---|",
        *clients,
    ]


def _period_table(summary: dict[str, Any]) -> list[str]:
    oracles = [o for o in ORACLES if any(f"gap_to_{o}" in s for s in summary.values())]
    head = "| arm | users | " + " | ".join(
        [METRICS[m].title for m in METRICS] + ["coverage (items)"]
        + [f"CTR gap to {o}" for o in oracles]
    ) + " |"  # fmt: skip
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for arm, s in summary.items():
        cells = [s[m].text() for m in METRICS] + [str(s[COVERAGE])]
        cells += [s[f"gap_to_{o}"]["ctr"].text() if f"gap_to_{o}" in s else "" for o in oracles]
        rows.append(f"| {arm} | {s['users']} | " + " | ".join(cells) + " |")
    return rows


def _parity_lines(days: list[dict[str, Any]]) -> list[str]:
    """Per checked day: did the loop's features equal a from-scratch rebuild?"""
    lines = []
    for day in (d for d in days if "parity" in d):
        parity = day["parity"]
        verdict = (
            "equal"
            if parity["equal"]
            else f"{parity['differences']} differences, e.g. " + "; ".join(parity["examples"])
        )
        lines.append(
            f"- After day {day['day']}: the loop's features vs a from-scratch rebuild of the same "
            f"events ({parity['partitions_compared']} offline partitions, "
            f"{parity['online_values_compared']} online values): {verdict}."
        )
    return ["", *lines] if lines else []


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the setup, per seed a table per period, the gaps, the
    separation verdicts and the latency."""
    config = report["config"]
    lines = [
        f"# Simulated A/B through the served bento: {report['world']}",
        "",
        f"Command: `{report['command']}`. {config['days']} simulated days, "
        f"{config['users']} sampled users a seed (each opens the {config['scene']} feed once a "
        f"day, k = {config['k']}), arms by a hash of the user id; models retrained through "
        f"`mmrec run` every {config['retrain_every'] or 'never'} day(s). 95% intervals: "
        f"percentile bootstrap over users ({RESAMPLES} resamples). Cold items: those the served "
        "ranker did not learn (not in its training split).",
        "",
        "| arm | what |",
        "|---|---|",
        *(f"| {name} | {ARMS[name].about} |" for name in config["arms"]),
    ]
    for run in report["runs"]:
        lines += ["", f"## Seed {run['seed']} ({run['seconds']:.0f} s)", ""]
        days = ", ".join(f"day {d['day']} = {d['data_day']}" for d in run["days"])
        lines.append(f"Simulated days as data days: {days}.")
        lines += _parity_lines(run["days"])
        for period, summary in run["summary"].items():
            title = "All days (per user over the days)" if period == ALL_DAYS else f"Day {period}"
            lines += ["", f"### {title}", "", *_period_table(summary)]
        every = run["summary"][ALL_DAYS]
        gaps = [
            f"| {arm} | "
            + " | ".join(s[f"gap_to_{o}"][m].text() for o in ORACLES for m in GAP_METRICS)
            + " |"
            for arm, s in every.items()
            if all(f"gap_to_{o}" in s for o in ORACLES)
        ]
        if gaps:
            head = " | ".join(f"{m} - {o}" for o in ORACLES for m in GAP_METRICS)
            lines += ["", "### Gap to each oracle, all days", "", f"| arm | {head} |",
                      "|---|" + "---|" * len(ORACLES) * len(GAP_METRICS), *gaps]  # fmt: skip
        lines += ["", "### Full pipeline vs the baselines (all days)", ""]
        lines += [f"- {verdict_text(verdict)}." for verdict in run["separation"]]
        lines += [
            "",
            "### Served latency (from /metrics; measured on the machine the run had)",
            "",
            "A bento serves one day, so its histograms hold that day's requests, every policy "
            "it served (the popular and random ones have no rank stage). Quantiles are read "
            "from the histogram buckets.",
            "",
        ]
        lines += _latency_rows(run["latency"])
    return "\n".join(lines) + "\n"


def plot_metric(report: dict[str, Any], metric: str, path: Path) -> Path:
    """One metric over the simulated days: a line per arm (a line style per seed) and its
    95% band."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = dict(zip(ARMS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    styles = ("-", "--", ":", "-.")
    for r, run in enumerate(report["runs"]):
        days = [p for p in run["summary"] if p != ALL_DAYS]
        x = np.asarray([int(d) for d in days])
        for arm in ARMS:
            values = [run["summary"][d].get(arm) for d in days]
            if any(v is None for v in values):
                continue
            if metric == COVERAGE:
                y = np.asarray([v[COVERAGE] for v in values], dtype=float)
                low = high = None
            else:
                y = np.asarray(
                    [np.nan if v[metric].value is None else v[metric].value for v in values]
                )
                low = np.asarray(
                    [np.nan if v[metric].low is None else v[metric].low for v in values]
                )
                high = np.asarray(
                    [np.nan if v[metric].high is None else v[metric].high for v in values]
                )
            label = f"{arm} (seed {run['seed']})" if len(report["runs"]) > 1 else arm
            ax.plot(x, y, styles[r % len(styles)], marker="o", color=colours[arm], label=label)
            if low is not None:
                ax.fill_between(x, low, high, color=colours[arm], alpha=0.12)
    title = "coverage: distinct items shown" if metric == COVERAGE else METRICS[metric].title
    ax.set(title=f"{title}, by simulated day", xlabel="simulated day", ylabel=metric)
    ax.set_xticks(
        sorted({int(d) for run in report["runs"] for d in run["summary"] if d != ALL_DAYS})
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: Path, name: str) -> list[Path]:
    """`<name>.json`, `<name>.md` and `<name>-<metric>.png` per metric under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_json(_plain(report), out_dir / f"{name}.json")]
    (out_dir / f"{name}.md").write_text(markdown(report))
    paths.append(out_dir / f"{name}.md")
    paths += [plot_metric(report, metric, out_dir / f"{name}-{metric}.png") for metric in PLOTTED]
    return paths
