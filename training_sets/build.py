"""`mmrec train build-sets`: point-in-time-correct training sets through Feast.

Samples (keys, labels, split) come from the logs, raw and served (training_sets/samples.py,
mmrec/event_log.py); every feature comes from `get_historical_features` with the `ranking` /
`recall` feature services, in chunks so the bench-scale world fits in memory. Output: Parquet parts DuckDB can query plus a manifest:

  data/training/<name>/split=<train|valid|test>/part-00000.parquet
  data/training/<name>/manifest.json   (feature service, time range, row counts, label rates)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mmrec.errors import UserError
from mmrec.event_log import events_view, load_served
from mmrec.feast_store import historical_features, open_store, service_refs_by_entity
from mmrec.io import building_folder, progress, write_json, write_parquet
from mmrec.settings import Settings
from mmrec.vocab import RANKING_SERVICE, RANKING_TASKS, RECALL_SERVICE
from training_sets.samples import NegativeSampler, ranking_samples, recall_positives
from training_sets.splits import DaySplit, SplitSpec

log = logging.getLogger(__name__)
NO_SKU = 0  # sku ids start at 1: rows of channels without a seed SKU read nulls for it


@dataclass(frozen=True)
class BuildConfig:
    chunk_rows: int = 200_000  # entity rows per Feast call (memory bound, see README)
    split: SplitSpec = field(default_factory=SplitSpec)  # newest 10% of events test, 10% valid
    negative_ratio: int = 4
    popularity_alpha: float = 0.0  # 0 = uniform negatives; 0.75 = popularity-corrected
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise UserError(f"chunk_rows must be >= 1, got {self.chunk_rows}")


def read_split(settings: Settings, name: str, split: str) -> pd.DataFrame:
    """One split of a built training set."""
    files = sorted((settings.training_set_dir(name) / f"split={split}").glob("*.parquet"))
    if not files:
        raise UserError(
            f"no {name} {split} split in {settings.training_set_dir(name)}: run `mmrec train build-sets`"
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def item_feature_names(store, service) -> list[str]:
    """Features of the service's views keyed on the item entity."""
    return [ref.split(":")[1] for ref in service_refs_by_entity(store, service).get("item", [])]


def _retrieve(
    store, service, entity_rows: pd.DataFrame, chunk_rows: int, label: str
) -> pd.DataFrame:
    """Point-in-time features for every entity row, through Feast, chunk by chunk."""
    entity_rows = entity_rows.assign(
        event_timestamp=pd.to_datetime(entity_rows.event_timestamp, utc=True).astype(
            "datetime64[us, UTC]"
        )
    )
    starts = range(0, len(entity_rows), chunk_rows)
    parts = []
    for start in progress(starts, f"features for {label}"):
        chunk = entity_rows.iloc[start : start + chunk_rows]
        out = historical_features(store, service, chunk)
        if len(out) != len(chunk):
            raise RuntimeError(f"Feast returned {len(out)} rows for {len(chunk)} entity rows")
        parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else entity_rows


# A total order over sample rows, so a rebuild writes identical files whatever the chunking.
ROW_ORDER = (
    "event_timestamp",
    "channel",
    "user_id",
    "session_id",
    "item_id",
    "seed_item_id",
    "sku_id",
    "label",
)


def _write_splits(frame: pd.DataFrame, folder: Path) -> dict[str, int]:
    """Replace `folder` with the frame split by its split column, swapped in whole (re-running
    is safe; a reader sees the old splits or the new ones)."""
    counts = {}
    with building_folder(folder) as staging:
        for split_name, part in frame.groupby("split", sort=True):
            write_parquet(
                part.sort_values([c for c in ROW_ORDER if c in part], kind="stable").reset_index(
                    drop=True
                ),
                staging / f"split={split_name}" / "part-00000.parquet",
            )
            counts[str(split_name)] = len(part)
    return counts


def build_ranking_set(settings: Settings, config: BuildConfig, store=None) -> dict:
    store = store or open_store(settings)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = _events(con, settings)
    split, summary = data_split(con, events, config.split)
    samples = ranking_samples(con, events, str(settings.raw_dir / "items.parquet"), split)
    frame = _retrieve(
        store,
        store.get_feature_service(RANKING_SERVICE),
        samples,
        config.chunk_rows,
        RANKING_SERVICE,
    )
    folder = settings.training_set_dir(RANKING_SERVICE)
    counts = _write_splits(frame, folder)
    manifest = {
        "feature_service": RANKING_SERVICE,
        "labels": [f"label_{t}" for t in RANKING_TASKS],
        "time_range": [str(frame.event_timestamp.min()), str(frame.event_timestamp.max())],
        "days": {"train": split.train, "valid": split.valid, "test": split.test},
        "split": summary,
        "rows": counts,
        "label_rates": {t: float(frame[f"label_{t}"].mean()) for t in RANKING_TASKS},
        "cold_item_rows_in_test": int(frame.loc[frame.split == "test", "is_cold"].sum()),
    }
    write_json(manifest, folder / "manifest.json")
    return manifest


def build_recall_set(settings: Settings, config: BuildConfig, store=None) -> dict:
    store = store or open_store(settings)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    items_file = str(settings.raw_dir / "items.parquet")
    events = _events(con, settings)
    split, summary = data_split(con, events, config.split)
    positives = recall_positives(con, events, items_file, split)
    catalog = con.execute(
        f"""SELECT i.item_id, epoch_us(i.publish_ts::TIMESTAMPTZ) AS publish_us, count(e.item_id) AS impressions
           FROM read_parquet($items) i LEFT JOIN {events} e
             ON e.item_id = i.item_id AND e.event_type = 'impression'
           GROUP BY ALL ORDER BY i.item_id""",
        {"items": items_file},
    ).df()
    sampler = NegativeSampler(config.negative_ratio, config.popularity_alpha)
    negatives = sampler.sample(
        positives,
        catalog.item_id.to_numpy(),
        catalog.publish_us.to_numpy(),
        catalog.impressions.to_numpy(),
        np.random.default_rng(config.seed),
    )
    samples = pd.concat([positives.assign(label=1), negatives.assign(label=0)], ignore_index=True)
    samples["sku_id"] = samples.sku_id.fillna(NO_SKU).astype("int64")
    service = store.get_feature_service(RECALL_SERVICE)
    frame = _retrieve(store, service, samples, config.chunk_rows, RECALL_SERVICE)
    # V2V queries: the seed video's item features at the same time, through the same service
    item_features = item_feature_names(store, service)
    seeds = frame.loc[
        frame.channel == "v2v", ["seed_item_id", "event_timestamp", "user_id", "sku_id"]
    ].drop_duplicates(["seed_item_id", "event_timestamp"])
    if seeds.empty:  # no two videos clicked in one session: a log without V2V pairs
        frame = frame.assign(**{f"seed_{f}": None for f in item_features})
    else:
        seed_rows = seeds.rename(columns={"seed_item_id": "item_id"})
        seed_features = _retrieve(store, service, seed_rows, config.chunk_rows, "v2v seeds")[
            ["item_id", "event_timestamp", *item_features]
        ]
        seed_features = seed_features.rename(
            columns={"item_id": "seed_item_id", **{f: f"seed_{f}" for f in item_features}}
        )
        frame = frame.merge(seed_features, on=["seed_item_id", "event_timestamp"], how="left")
    folder = settings.training_set_dir(RECALL_SERVICE)
    counts = _write_splits(frame, folder)
    manifest = {
        "feature_service": RECALL_SERVICE,
        "labels": ["label"],
        "time_range": [str(frame.event_timestamp.min()), str(frame.event_timestamp.max())],
        "days": {"train": split.train, "valid": split.valid, "test": split.test},
        "split": summary,
        "rows": counts,
        "positives_by_channel": {
            str(k): int(v) for k, v in positives.channel.value_counts().items()
        },
        "negative_ratio": config.negative_ratio,
        "negatives_dropped": int(len(positives) * config.negative_ratio - len(negatives)),
        "popularity_alpha": config.popularity_alpha,
        "label_rates": {"label": float(frame.label.mean())},
    }
    write_json(manifest, folder / "manifest.json")
    return manifest


def day_event_counts(con: duckdb.DuckDBPyConnection, events: str) -> list[tuple[str, int]]:
    """(ISO day, events) of every data day, in order."""
    return con.execute(
        f"SELECT strftime(CAST(event_timestamp AS DATE), '%Y-%m-%d') AS day, count(*) "
        f"FROM {events} GROUP BY 1 ORDER BY 1"
    ).fetchall()


def data_split(
    con: duckdb.DuckDBPyConnection, events: str, spec: SplitSpec
) -> tuple[DaySplit, str]:
    """The split `spec` gives the data's days, and its summary (each part's days and share
    of the events)."""
    counts = day_event_counts(con, events)
    split = spec.split(counts)
    return split, split.summary(dict(counts))


def _events(con: duckdb.DuckDBPyConnection, settings: Settings) -> str:
    """Every event, raw and served (`POST /events`), as relation `events` on `con`."""
    load_served(con, settings)
    return events_view(con, settings)
