"""World sizes: `tiny` for tests (seconds), `small` for the demo, `bench` for benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

from mmrec.errors import UserError


@dataclass(frozen=True)
class Scale:
    """How big a generated world is.

    Events are roughly users x active_rate x sessions x impressions_per_session x days, plus
    the clicks, watches and product-domain events those impressions lead to.
    """

    name: str
    n_users: int
    n_skus: int
    n_items_initial: int  # catalog before day 0, published over the previous `backfill_days`
    n_items_per_day: int  # new items each day: the cold-start supply
    n_days: int
    active_rate: float = 0.5  # share of users active on a given day
    sessions_per_active_user: float = 1.5  # Poisson mean
    impressions_per_session: int = 10
    image_size: int = 64  # cover and frame side, pixels
    n_frames: int = 4  # frames per video
    backfill_days: int = 30


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        "tiny", n_users=300, n_skus=200, n_items_initial=400, n_items_per_day=25, n_days=6
    ),
    "small": Scale(
        "small", n_users=3_000, n_skus=2_000, n_items_initial=4_000, n_items_per_day=150, n_days=14
    ),
    "bench": Scale(
        "bench",
        n_users=100_000,
        n_skus=50_000,
        n_items_initial=90_000,
        n_items_per_day=1_000,
        n_days=14,
    ),
}


def get_scale(name: str) -> Scale:
    """The named scale, or a UserError that lists the valid names."""
    try:
        return SCALES[name]
    except KeyError:
        raise UserError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}") from None
