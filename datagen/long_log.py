"""A long, sparse rating log in the data contract's files: the shape real logs have and the
synthetic world does not.

The synthetic world is 14 dense days. A real rating log (MovieLens' `ml-latest-small` of 2016:
671 users, 9,066 titles, ~100k ratings on 3,840 distinct days over 21 years) is the opposite:
most calendar days are empty, users come in a few bursts years apart and are idle for months,
titles are text only and most are rarely rated. `write_long_log` writes such a log as contract
files (`docs/data-contract.md`) for `mmrec data import`, from a seed:

- every rating is an `impression`, a liked one also a `click` one second later (as the
  MovieLens adapter does), so the log has clicks and impressions only;
- each user rates in a handful of sessions spread over the years (their idle gaps are
  months or years), a heavy-tailed number of titles each, favouring one genre;
- titles are "<Adjective> <Noun> (<year>). Genres: <g1>, <g2>." with no images or SKUs.

`bench/long_log_bench.py` uses the full shape; tests use a small one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = (
    "action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama",
    "fantasy", "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller",
    "war", "western", "imax",
)  # fmt: skip
_ADJECTIVES = (
    "silent", "broken", "golden", "last", "hidden", "wild", "little", "dark", "lost", "bright",
    "endless", "secret", "cold", "final", "lonely", "restless", "crimson", "quiet", "distant",
)  # fmt: skip
_NOUNS = (
    "river", "empire", "garden", "road", "summer", "stranger", "city", "island", "promise",
    "winter", "kingdom", "shadow", "voyage", "letter", "machine", "harbor", "mountain", "dream",
)  # fmt: skip
DAY_S = 86_400
LIKED_SHARE = 0.5  # ratings that are also clicks (MovieLens: rating >= 4 is about half)


@dataclass(frozen=True)
class LongLogShape:
    """How big and how sparse the log is (defaults: the 21-year, 3,840-day rating log)."""

    users: int = 671
    items: int = 9_066
    events: int = 151_572  # impressions + clicks
    active_days: int = 3_840  # distinct days with events
    years: int = 21
    first_day: datetime = datetime(1995, 1, 9, tzinfo=UTC)
    sessions_per_user: float = 4.0  # mean bursts of activity per user


def write_long_log(
    folder: Path, shape: LongLogShape | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """Write `events.csv` and `items.csv` of a long sparse log to `folder`; returns both paths."""
    shape = shape or LongLogShape()
    rng = np.random.default_rng(seed)
    calendar = shape.years * 365
    if shape.active_days > calendar:
        raise ValueError(f"{shape.active_days} active days do not fit in {shape.years} years")
    days = np.sort(rng.choice(calendar, shape.active_days, replace=False))  # day offsets
    items = _items(shape.items, rng)
    ratings = _ratings(shape, days, items, rng)
    liked = ratings[rng.random(len(ratings)) < LIKED_SHARE]
    events = pd.concat(
        [
            ratings.assign(event_type="impression"),
            liked.assign(event_type="click", event_ts=liked.event_ts + 1),
        ],
        ignore_index=True,
    ).sort_values(["event_ts", "user_id", "event_type"], kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    events_path, items_path = folder / "events.csv", folder / "items.csv"
    events[["user_id", "item_id", "event_type", "event_ts"]].to_csv(events_path, index=False)
    items.drop(columns=["genre_index", "weight"]).to_csv(items_path, index=False)
    return events_path, items_path


def _items(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Titles with a main genre (and sometimes a second), heavy-tailed popularity weights."""
    genre = rng.integers(0, len(GENRES), n)
    second = rng.integers(0, len(GENRES), n)
    year = rng.integers(1930, 2016, n)
    titles = [
        f"{_ADJECTIVES[a].title()} {_NOUNS[b].title()} ({y}). Genres: {', '.join(gs)}."
        for a, b, y, gs in zip(
            rng.integers(0, len(_ADJECTIVES), n),
            rng.integers(0, len(_NOUNS), n),
            year,
            _genre_lists(genre, second),
            strict=True,
        )
    ]
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1),
            "title": titles,
            "material": "video",
            "category": [GENRES[g] for g in genre],
            "tags": ["|".join(gs) for gs in _genre_lists(genre, second)],
            "genre_index": genre,
            "weight": rng.pareto(1.2, n) + 0.05,
        }
    )


def _genre_lists(genre: np.ndarray, second: np.ndarray) -> list[tuple[str, ...]]:
    return [
        (GENRES[g],) if g == s else (GENRES[g], GENRES[s])
        for g, s in zip(genre, second, strict=True)
    ]


def _ratings(
    shape: LongLogShape, days: np.ndarray, items: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """(user_id, item_id, event_ts) ratings: users rate in bursts on a few active days; every
    active day gets at least one rating."""
    n_ratings = round(shape.events / (1 + LIKED_SHARE))
    # heavy-tailed ratings per user, at least 20 each (as ml-latest-small's users)
    per_user = rng.lognormal(0.0, 1.0, shape.users)
    per_user = 20 + np.floor(per_user / per_user.sum() * (n_ratings - 20 * shape.users))
    per_user[: n_ratings - int(per_user.sum())] += 1
    user = np.repeat(np.arange(1, shape.users + 1), per_user.astype(np.int64))
    # each user's bursts: a few of the active days; a rating falls on one of its user's bursts
    n_bursts = 1 + rng.poisson(shape.sessions_per_user - 1, shape.users)
    bursts = [np.sort(rng.choice(days, min(k, len(days)), replace=False)) for k in n_bursts]
    day = np.array([rng.choice(bursts[u - 1]) for u in user])
    # every active day holds a rating: the first len(days) ratings (shuffled) cover them all
    order = rng.permutation(len(user))
    day[order[: len(days)]] = days
    # each user favours a genre; a rating is in it 70% of the time, by popularity
    favourite = rng.integers(0, len(GENRES), shape.users)
    weights = items.weight.to_numpy()
    by_genre = {g: np.flatnonzero(items.genre_index.to_numpy() == g) for g in range(len(GENRES))}
    in_genre = rng.random(len(user)) < 0.7
    item = rng.choice(len(weights), len(user), p=weights / weights.sum())  # the other 30%
    for g, members in by_genre.items():
        rows = np.flatnonzero(in_genre & (favourite[user - 1] == g))
        if len(members) and len(rows):
            p = weights[members] / weights[members].sum()
            item[rows] = members[rng.choice(len(members), len(rows), p=p)]
    seconds = rng.integers(8 * 3600, 23 * 3600, len(user))
    start = int(shape.first_day.timestamp())
    return pd.DataFrame(
        {
            "user_id": user,
            "item_id": items.item_id.to_numpy()[item],
            "event_ts": start + day * DAY_S + seconds,
        }
    )
