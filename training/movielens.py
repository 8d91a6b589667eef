"""`mmrec train recall-movielens`: the two-tower recall and its baselines on MovieLens-100k.

Data: MovieLens-100k from the `recbole` wheel, read by the adapter `ingest.movielens` (943
users, 1682 movies, 100,000 ratings). The model, training loop and metrics are the synthetic world's
(models/recall.py, recall_train.fit, recall_eval); only the data side lives here.

Choices, stated once:
- Ratings -> behaviours: rating >= 4 is a click (positive); rating <= 3 is an impression
  without a click. Impressions are not training rows (a 3-star movie was still chosen and
  watched; the sampled negatives play the "not clicked" part, as on the synthetic world), but
  they are interactions: evaluation excludes them from that user's candidates. A user's
  behaviours are ordered by (timestamp, item_id): ratings often share a second.
- Items: text = "<title> (<year>). Genres: <g1>, <g2>." through all-MiniLM-L6-v2
  (content/text_encoder.py, offline from its wheel); tags = the 19-genre multi-hot ("unknown"
  included), quality 0.5 (unknown); no visual field: the tower reads ("id", "text", "tags")
  and `ItemTable.visual` is None. The content-only baseline is the raw text
  cosine (the table's `fused` vectors are the text embeddings).
- Split by time, on global quantiles of the rating timestamps: train before the 80% quantile,
  valid up to the 90% one, test after. Cold items: items first rated in the test period, plus
  10% of all items held out (seeded) whose train/valid ratings are deleted (the natural cold
  set is about 40 items). Warm: the rest. As on the synthetic world, the ID table knows the
  items with a train click; every other item (cold, or warm without a train click) wears
  UNKNOWN_ITEM_ID, which ID dropout teaches the model to read as "trust the content".
- Training rows (train split; the valid split only picks the epoch): each click is one
  positive with 4 negatives drawn uniformly from the items rated (not held out) up to the end
  of its split, redrawn when equal to the row's positive or V2V seed.
  U2V: the user's last `max_seq_len` earlier clicks (newest first) -> the click; category
  affinity = the genre distribution of all the user's earlier clicks. V2V: the user's
  previous click -> the click.
- Evaluation, per user (not per row as in recall_eval): test users with at least one click
  before the test period (a U2V query needs history; the others are only counted). Query =
  the user at the test start (last clicks, genre affinity); truth = their test clicks;
  candidates = every item but those the user rated before the test period. Recall@K(u) =
  share of u's truth ranked < K; NDCG@50(u) = DCG / ideal DCG of |truth|; both averaged over
  users. Warm / cold: the same rankings, truth restricted to warm / cold items (users without
  truth in a segment skip it). Ranks are expected positions among ties (recall_eval).
- Methods: popularity (train clicks), content-only, the ID-only two-tower and the two-tower
  (id + text + tags), both trained by recall_train.fit (ID dropout, in-batch softmax, early
  stopping on valid BCE). The table goes to <workspace>/data/artifacts/recall-movielens as
  report.md, metrics.json and recall_at_k.png (recall_eval.write_report).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from ingest.movielens import (
    DATASET,
    MovieLens,
    dataset_dir,
    genre_matrix,
    item_texts,
    load_movielens,
)
from mmrec.io import progress
from mmrec.settings import Settings
from models.recall import ItemInputs, TwoTowerRecall, UserQuery
from models.recall_inputs import UNKNOWN_QUALITY, ChannelData, ItemTable
from training.recall_eval import (
    KS,
    NDCG_K,
    QUERY_CHUNK,
    Scorer,
    content_scorer,
    model_scorer,
    popularity_scorer,
    target_ranks,
    write_report,
)
from training.recall_train import RecallSplits, TrainConfig, fit, model_config

log = logging.getLogger(__name__)

ARTIFACT_DIR = "recall-movielens"
TITLE = "Recall on MovieLens-100k"
CLICK_RATING = 4  # rating >= 4 is a click
MODEL_FIELDS = ("id", "text", "tags")
PERIODS = ("train", "valid", "test")


def encode_texts(texts: list[str], threads: int, batch_size: int = 64) -> tuple[np.ndarray, str]:
    """(N, 384) all-MiniLM-L6-v2 embeddings of `texts` and the encoder's version string."""
    from content.text_encoder import TextEncoder

    encoder = TextEncoder(threads=threads)
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    vectors = [encoder.encode(chunk, batch_size) for chunk in progress(chunks, "item texts")]
    return np.concatenate(vectors), encoder.version


def item_table(ml: MovieLens, text_emb: np.ndarray, encoder_version: str) -> ItemTable:
    """The ItemTable of every movie: genre tags, text embeddings, no visual field."""
    n = len(ml.items)
    if text_emb.shape[0] != n:
        raise ValueError(f"{text_emb.shape[0]} text embeddings for {n} movies")
    genres = genre_matrix(ml.items, ml.genres)
    first = ml.ratings.groupby("item_id").timestamp.min()
    return ItemTable(
        item_id=ml.items.item_id.to_numpy(np.int64),
        is_video=np.ones(n, dtype=bool),
        publish_ts=ml.items.item_id.map(first).fillna(0).to_numpy(np.int64),
        category_one_hot=genres,
        tags=genres,
        quality=np.full(n, UNKNOWN_QUALITY, dtype=np.float32),
        text=text_emb.astype(np.float32),
        visual=None,
        fused=text_emb.astype(np.float32),
        has_content=np.ones(n, dtype=bool),
        versions={
            "encoder_name": "all-MiniLM-L6-v2",
            "encoder_version": encoder_version,
            "fusion_version": "none",
            "tag_model_version": f"{DATASET} genres",
        },
        categories=tuple(ml.genres),
        stats={"items": n},
    )


# ---------------------------------------------------------------------------------------------
# Split


@dataclass(frozen=True)
class SplitConfig:
    """Time split quantiles, the held-out item share, negatives per click, the seed."""

    valid_quantile: float = 0.8
    test_quantile: float = 0.9
    holdout_share: float = 0.1
    negatives: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.valid_quantile < self.test_quantile < 1:
            raise ValueError(
                "need 0 < valid_quantile < test_quantile < 1, got "
                f"{self.valid_quantile} and {self.test_quantile}"
            )
        if not 0 <= self.holdout_share < 1:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives}")


@dataclass
class TimeSplit:
    """The behaviour log after the split.

    ratings: user_id, item_id, rating, timestamp, click (bool), period ("train" | "valid" |
    "test"), sorted by user then (timestamp, item_id); held-out items' pre-test ratings are
    gone. valid_start / test_start: first second of each period. holdout, cold: item ids.
    """

    ratings: pd.DataFrame
    valid_start: int
    test_start: int
    holdout: np.ndarray
    cold: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


def split_ratings(ml: MovieLens, config: SplitConfig) -> TimeSplit:
    """Map ratings to behaviours, cut the time line, hold items out (module docstring)."""
    ratings = ml.ratings.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True)
    ts = ratings.timestamp.to_numpy()
    valid_start, test_start = (
        int(np.ceil(q)) for q in np.quantile(ts, [config.valid_quantile, config.test_quantile])
    )
    ratings["click"] = ratings.rating >= CLICK_RATING
    ratings["period"] = np.where(
        ts < valid_start, "train", np.where(ts < test_start, "valid", "test")
    )
    rng = np.random.default_rng(config.seed)
    catalog = ml.items.item_id.to_numpy(np.int64)
    holdout = np.sort(
        rng.choice(catalog, round(config.holdout_share * len(catalog)), replace=False)
    )
    deleted = ratings.item_id.isin(holdout) & (ratings.period != "test")
    ratings = ratings[~deleted].reset_index(drop=True)
    seen = ratings.item_id[ratings.period != "test"].unique()
    cold = np.setdiff1d(catalog, seen)
    stats = {
        "ratings": len(ml.ratings),
        "ratings_deleted_holdout": int(deleted.sum()),
        **{f"ratings_{p}": int((ratings.period == p).sum()) for p in PERIODS},
        **{f"clicks_{p}": int((ratings.click & (ratings.period == p)).sum()) for p in PERIODS},
        "items_held_out": len(holdout),
        "items_cold": len(cold),
        "items_cold_first_rated_in_test": len(np.setdiff1d(cold, holdout)),
    }
    return TimeSplit(ratings, valid_start, test_start, holdout, cold, stats)


# ---------------------------------------------------------------------------------------------
# Training rows


def click_states(
    clicks: pd.DataFrame, genres: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """What each click's user had done before it.

    clicks: sorted by user then time, with `row` (ItemTable row; -1 for a query placeholder,
    which must be its user's last entry). Returns history (n, max_len) rows of the user's
    earlier clicks, newest first, -1 = none; affinity (n, n_genres) their genre distribution.
    """
    rows = clicks.row.to_numpy(np.int64)
    position = clicks.groupby("user_id", sort=False).cumcount().to_numpy()
    index = np.arange(len(rows))
    history = np.full((len(rows), max_len), -1, dtype=np.int64)
    for lag in range(1, max_len + 1):
        has = position >= lag
        history[has, lag - 1] = rows[index[has] - lag]
    counts = np.where((rows >= 0)[:, None], genres[np.maximum(rows, 0)], 0.0)
    before = np.cumsum(counts, axis=0) - counts  # genres of every earlier entry, all users
    before -= before[index - position]  # ... minus those of earlier users
    total = before.sum(1, keepdims=True)
    affinity = np.divide(before, total, out=np.zeros_like(before), where=total > 0)
    return history, affinity.astype(np.float32)


def sample_negatives(
    positives: np.ndarray,
    pool: np.ndarray,
    k: int,
    rng: np.random.Generator,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """(n, k) rows drawn uniformly from `pool`, never the row's positive (nor `avoid`)."""
    if len(np.setdiff1d(pool, positives)) == 0 or len(pool) < 3:
        raise ValueError(f"a negative pool of {len(pool)} items is too small")
    negatives = rng.choice(pool, (len(positives), k))
    while True:
        bad = negatives == positives[:, None]
        if avoid is not None:
            bad |= negatives == avoid[:, None]
        if not bad.any():
            return negatives
        negatives[bad] = rng.choice(pool, int(bad.sum()))


def _labelled_rows(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each positive followed by its negatives: item rows (n * (1 + k),) and labels."""
    items = np.concatenate([positives[:, None], negatives], axis=1).ravel()
    labels = np.tile(np.r_[1.0, np.zeros(negatives.shape[1])], len(positives))
    return items, labels.astype(np.float32)


def _channel(
    channel: str,
    query: UserQuery | ItemInputs,
    items: np.ndarray,
    labels: np.ndarray,
    event_ts: np.ndarray,
    table: ItemTable,
    seed_rows: np.ndarray,
    seq_rows: np.ndarray,
) -> ChannelData:
    return ChannelData(
        channel=channel,
        query=query,
        item_rows=torch.from_numpy(items),
        item_id=torch.from_numpy(table.item_id[np.maximum(items, 0)]),
        labels=torch.from_numpy(labels),
        event_ts=torch.from_numpy(event_ts.astype(np.int64)),
        seed_rows=torch.from_numpy(seed_rows),
        seq_rows=torch.from_numpy(seq_rows),
    )


def user_query(history: np.ndarray, affinity: np.ndarray, table: ItemTable) -> UserQuery:
    """A UserQuery of raw item ids (`model_query` maps unknown ones at batch time)."""
    ids = np.where(history >= 0, table.item_id[np.maximum(history, 0)], -1)
    return UserQuery(
        seq_item_ids=torch.from_numpy(ids),
        seq_mask=torch.from_numpy(history >= 0),
        category_affinity=torch.from_numpy(affinity),
    )


def u2v_rows(
    clicks: pd.DataFrame,
    negatives: np.ndarray,
    history: np.ndarray,
    affinity: np.ndarray,
    table: ItemTable,
) -> ChannelData:
    """U2V rows: (earlier clicks, genre affinity) -> the click, then its negatives."""
    repeat = negatives.shape[1] + 1
    items, labels = _labelled_rows(clicks.row.to_numpy(np.int64), negatives)
    history, affinity = (np.repeat(a, repeat, axis=0) for a in (history, affinity))
    event_ts = np.repeat(clicks.timestamp.to_numpy(), repeat)
    no_seed = np.full(len(items), -1, dtype=np.int64)
    query = user_query(history, affinity, table)
    return _channel("u2v", query, items, labels, event_ts, table, no_seed, history)


def v2v_rows(
    clicks: pd.DataFrame, negatives: np.ndarray, seeds: np.ndarray, table: ItemTable
) -> ChannelData:
    """V2V rows: the previous click -> the click, then its negatives. The seed's features are
    read from the item table per batch (`model_query`), so the query holds only its ids."""
    repeat = negatives.shape[1] + 1
    items, labels = _labelled_rows(clicks.row.to_numpy(np.int64), negatives)
    seed_rows = np.repeat(seeds, repeat)
    query = ItemInputs(item_id=torch.from_numpy(table.item_id[seed_rows]))
    event_ts = np.repeat(clicks.timestamp.to_numpy(), repeat)
    no_history = np.full((len(items), 0), -1, dtype=np.int64)
    return _channel("v2v", query, items, labels, event_ts, table, seed_rows, no_history)


def split_channels(
    clicks: pd.DataFrame,
    history: np.ndarray,
    affinity: np.ndarray,
    pool: np.ndarray,
    table: ItemTable,
    config: SplitConfig,
    rng: np.random.Generator,
) -> dict[str, ChannelData]:
    """The U2V and V2V rows of one split's clicks (states computed over the whole log)."""
    rows = clicks.row.to_numpy(np.int64)
    u2v = u2v_rows(
        clicks, sample_negatives(rows, pool, config.negatives, rng), history, affinity, table
    )
    has_seed = history[:, 0] >= 0
    seeds = history[has_seed, 0]
    negatives = sample_negatives(rows[has_seed], pool, config.negatives, rng, avoid=seeds)
    return {"u2v": u2v, "v2v": v2v_rows(clicks[has_seed], negatives, seeds, table)}


# ---------------------------------------------------------------------------------------------
# Benchmark


@dataclass
class Benchmark:
    """Everything a run needs.

    splits: RecallSplits whose train / valid hold U2V and V2V rows and whose test holds one
    U2V query per evaluated user; truth (P, 2) and seen (S, 2): (test query index, ItemTable
    row) of the users' test clicks and of their pre-test ratings; cold (N,) bool per table row.
    """

    splits: RecallSplits
    truth: np.ndarray
    seen: np.ndarray
    cold: np.ndarray
    info: dict[str, Any]


def eval_queries(
    history: np.ndarray, affinity: np.ndarray, test_start: int, table: ItemTable
) -> ChannelData:
    """One U2V row per evaluated user, at the test start; the truth lives in `Benchmark`."""
    n = len(history)
    none = np.full(n, -1, dtype=np.int64)
    query = user_query(history, affinity, table)
    labels = np.ones(n, dtype=np.float32)
    return _channel("u2v", query, none, labels, np.full(n, test_start), table, none, history)


def _pairs(frame: pd.DataFrame, query_index: pd.Series) -> np.ndarray:
    """(n, 2) int64 (query index, table row) of `frame`'s rows whose user has a query."""
    q = frame.user_id.map(query_index)
    keep = q.notna().to_numpy()
    return np.stack([q[keep].to_numpy(np.int64), frame.row.to_numpy(np.int64)[keep]], axis=1)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def build_benchmark(
    ml: MovieLens, table: ItemTable, config: SplitConfig, max_seq_len: int
) -> Benchmark:
    """Split, training rows, test queries and truth; the table learns its known IDs."""
    split = split_ratings(ml, config)
    ratings = split.ratings.assign(row=table.rows(split.ratings.item_id.to_numpy()))
    genres = table.tags
    pre_test = ratings[ratings.period != "test"]
    test_clicks = ratings[(ratings.period == "test") & ratings.click]
    # Each test user gets a placeholder after their last pre-test click: its state is the query.
    placeholders = pd.DataFrame(
        {"user_id": np.unique(test_clicks.user_id), "timestamp": split.test_start, "row": -1}
    )
    clicks = pd.concat([pre_test[pre_test.click], placeholders], ignore_index=True)
    clicks = clicks.sort_values(["user_id", "timestamp", "row"], ignore_index=True)
    history, affinity = click_states(clicks, genres, max_seq_len)
    rng = np.random.default_rng(config.seed)
    splits: dict[str, dict[str, ChannelData]] = {}
    for period, end in (("train", split.valid_start), ("valid", split.test_start)):
        mine = (clicks.period == period).to_numpy()
        pool = np.unique(ratings.row[ratings.timestamp < end])  # items rated so far
        splits[period] = split_channels(
            clicks[mine], history[mine], affinity[mine], pool, table, config, rng
        )
    query = (clicks.row < 0).to_numpy() & (history[:, 0] >= 0)
    users = clicks.user_id[query].to_numpy()
    n = len(users)
    splits["test"] = {"u2v": eval_queries(history[query], affinity[query], split.test_start, table)}
    train_u2v = splits["train"]["u2v"]
    table.set_known(table.item_id[np.unique(train_u2v.item_rows[train_u2v.labels > 0.5])])
    query_index = pd.Series(np.arange(n), index=users)
    truth, seen = _pairs(test_clicks, query_index), _pairs(pre_test, query_index)
    cold = np.isin(table.item_id, split.cold)
    stats = {
        **split.stats,
        "users": int(ml.ratings.user_id.nunique()),
        "items": len(table),
        "test_users_with_clicks": int(test_clicks.user_id.nunique()),
        "test_users_evaluated": n,
        "test_users_without_history": int(test_clicks.user_id.nunique()) - n,
        "truth_warm": int((~cold[truth[:, 1]]).sum()),
        "truth_cold": int(cold[truth[:, 1]].sum()),
        "items_known_to_id_table": int(table.stats["items_known"]),
        "warm_items_unknown_to_id_table": int(((table.model_id < 0) & ~cold).sum()),
        **{f"rows_{p}_{c}": len(d) for p in ("train", "valid") for c, d in splits[p].items()},
    }
    info = {
        "periods": {
            "train": f"{_iso(int(ratings.timestamp.min()))} .. {_iso(split.valid_start)}",
            "valid": f"{_iso(split.valid_start)} .. {_iso(split.test_start)}",
            "test": f"{_iso(split.test_start)} .. {_iso(int(ratings.timestamp.max()))}",
        },
        "split_config": asdict(config),
        "stats": stats,
    }
    log.info("movielens benchmark: %s", stats)
    recall_splits = RecallSplits(splits, table, (info["periods"]["test"],), {"data": stats})
    return Benchmark(recall_splits, truth, seen, cold, info)


# ---------------------------------------------------------------------------------------------
# Evaluation


def truth_ranks(scorer: Scorer, bench: Benchmark) -> np.ndarray:
    """(P,) expected rank of every truth pair among its user's candidates."""
    data = bench.splits["test"]["u2v"]
    ranks = np.zeros(len(bench.truth))
    for start in range(0, len(data), QUERY_CHUNK):
        rows = torch.arange(start, min(start + QUERY_CHUNK, len(data)))
        scores = scorer(data, rows)  # (Q, N)
        allowed = torch.ones_like(scores, dtype=torch.bool)
        seen = bench.seen[(bench.seen[:, 0] >= start) & (bench.seen[:, 0] < start + len(rows))]
        allowed[seen[:, 0] - start, seen[:, 1]] = False
        mine = (bench.truth[:, 0] >= start) & (bench.truth[:, 0] < start + len(rows))
        local = torch.from_numpy(bench.truth[mine, 0] - start)
        targets = torch.from_numpy(bench.truth[mine, 1])
        ranks[mine] = target_ranks(scores[local], targets, allowed[local]).numpy()
    return ranks


def user_metrics(ranks: np.ndarray, users: np.ndarray) -> dict[str, float | int | None]:
    """Recall@K and NDCG@50 of users with several relevant items, averaged over users."""
    ids, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    out: dict[str, float | int | None] = {"queries": len(ids)}
    for k in KS:
        hits = np.bincount(inverse, weights=(ranks < k).astype(float), minlength=len(ids))
        out[f"recall@{k}"] = float(np.mean(hits / counts)) if len(ids) else None
    gains = np.where(ranks < NDCG_K, 1.0 / np.log2(ranks + 2), 0.0)
    dcg = np.bincount(inverse, weights=gains, minlength=len(ids))
    ideal = np.cumsum(1.0 / np.log2(np.arange(NDCG_K) + 2))[np.minimum(counts, NDCG_K) - 1]
    out[f"ndcg@{NDCG_K}"] = float(np.mean(dcg / ideal)) if len(ids) else None
    return out


def evaluate(bench: Benchmark, models: dict[str, TwoTowerRecall]) -> dict[str, Any]:
    """Every baseline and model on the test users; recall_eval's report layout."""
    table = bench.splits.table
    scorers = {
        "popularity": popularity_scorer(bench.splits["train"], table),
        "content-only": content_scorer(table),
        **{name: model_scorer(model, table) for name, model in models.items()},
    }
    users, cold = bench.truth[:, 0], bench.cold[bench.truth[:, 1]]
    segments = {"all": np.ones_like(cold), "warm": ~cold, "cold": cold}
    methods = {}
    for name, scorer in scorers.items():
        ranks = truth_ranks(scorer, bench)
        methods[name] = {
            "all": {seg: user_metrics(ranks[m], users[m]) for seg, m in segments.items()}
        }
        log.info("%s: %s", name, methods[name]["all"]["all"])
    return {
        "split": "test",
        "test_days": [bench.info["periods"]["test"]],
        "catalog_items": len(table),
        "cold_items": int(bench.cold.sum()),
        "cold_rule": "first rated in the test period, or among the held-out items",
        "methods": methods,
    }


# ---------------------------------------------------------------------------------------------
# Run


NOTES = """
Queries are test users (at least one click before the test period); metrics are averaged over
users. Rating >= 4 = click; candidates = every movie the user had not rated before the test
period. Item tower: hashed ID + MiniLM text of "title (year). Genres: ..." + genre multi-hot.
Protocol and choices: training/movielens.py.
"""


def train_movielens(
    settings: Settings,
    train_config: TrainConfig,
    split_config: SplitConfig,
    ml: MovieLens | None = None,
) -> dict[str, Any]:
    """Load, split, fit the two-tower and the ID-only tower, evaluate, write the report."""
    started = time.perf_counter()
    ml = ml or load_movielens()
    text_emb, version = encode_texts(item_texts(ml.items), settings.torch_threads)
    table = item_table(ml, text_emb, version)
    bench = build_benchmark(ml, table, split_config, train_config.max_seq_len)
    fits = {}
    for name, fields in (("two-tower", MODEL_FIELDS), ("id-only", ("id",))):
        config = model_config(table, train_config, item_fields=fields, n_categories=len(ml.genres))
        fits[name] = fit(config, bench.splits, train_config, name)
    evaluation = evaluate(bench, {name: result.model for name, result in fits.items()})
    report = {
        "dataset": f"{DATASET} (recbole wheel: {dataset_dir()})",
        "behaviours": f"rating >= {CLICK_RATING} = click; lower = impression (not a row)",
        "item_fields": list(MODEL_FIELDS),
        "genres": list(ml.genres),
        "encoder_version": version,
        **bench.info,
        "train_config": asdict(train_config),
        "train": {
            name: {"seconds": round(r.train_seconds, 2), "history": r.history}
            for name, r in fits.items()
        },
        "evaluation": evaluation,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir = settings.artifacts_dir / ARTIFACT_DIR
    write_report(report, out_dir, TITLE)
    with (out_dir / "report.md").open("a") as f:
        f.write(NOTES)
    return report
