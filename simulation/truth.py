"""The generated world's hidden truth, as the simulated shoppers use it: who they are (their
latents in `data/truth/`) and whether they click an item shown to them (the world's own click
model, `datagen.behaviour.click_logit`, the function the generator drew every click from).

Only a world made by `mmrec generate` has a truth; imported data has none, and the simulator
refuses it here, before anything is copied or served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datagen.behaviour import click_logit, popularity_on_day
from datagen.catalog import SECONDS_PER_DAY
from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.vocab import POSITIONS
from mmrec.world_manifest import read_world_manifest

USERS_FILE, ITEMS_FILE = "users_latent.parquet", "items_latent.parquet"
SYNTHETIC = "synthetic"  # the manifest's `source` of a generated world


class NoHiddenTruthError(UserError):
    """The workspace's data has no hidden truth to draw clicks from (imported data)."""


@dataclass(frozen=True)
class HiddenWorld:
    """Item and user latents, row-aligned with the ids they are looked up by, and each item's
    publication time (its popularity decays from it)."""

    item_latent: pd.DataFrame
    user_latent: pd.DataFrame
    item_rows: pd.Index  # item_id -> row of item_latent
    user_rows: pd.Index  # user_id -> row of user_latent
    publish_s: np.ndarray  # (items,) unix seconds, row-aligned with item_latent

    @classmethod
    def load(cls, settings: Settings) -> HiddenWorld:
        """The workspace's truth; NoHiddenTruthError when its data was imported."""
        manifest = read_world_manifest(settings)
        truth = settings.truth_dir
        missing = [name for name in (USERS_FILE, ITEMS_FILE) if not (truth / name).exists()]
        if manifest.get("source", SYNTHETIC) != SYNTHETIC or missing:
            raise NoHiddenTruthError(
                f"{settings.data_dir} holds {manifest.get('source', 'imported')} data without a "
                f"hidden truth ({truth} lacks {', '.join(missing) or 'the generator manifest'}): "
                "the simulated shoppers click by the world's own click model and their hidden "
                "tastes, which only `mmrec generate` writes. Simulate on a generated world "
                "(`mmrec generate --scale small --seed 7 -w DIR`, `mmrec run -w DIR`)"
            )
        items = pd.read_parquet(truth / ITEMS_FILE)
        users = pd.read_parquet(truth / USERS_FILE)
        published = pd.read_parquet(
            settings.raw_dir / "items.parquet", columns=["item_id", "publish_ts"]
        )
        publish_s = (
            published.set_index("item_id").publish_ts.reindex(items.item_id)
            .astype("datetime64[s, UTC]").astype("int64").to_numpy()
        )  # fmt: skip
        return cls(items, users, pd.Index(items.item_id), pd.Index(users.user_id), publish_s)

    @property
    def item_ids(self) -> np.ndarray:
        return self.item_rows.to_numpy(np.int64)

    def _rows(self, index: pd.Index, ids: np.ndarray, what: str) -> np.ndarray:
        rows = index.get_indexer(np.asarray(ids, dtype=np.int64))
        if (rows < 0).any():
            unknown = np.asarray(ids)[rows < 0][:5].tolist()
            raise ValueError(f"{what} {unknown} are not in the world's truth")
        return rows

    def popularity(self, at_s: int) -> np.ndarray:
        """Every item's popularity on the world day holding `at_s` (row-aligned)."""
        day_start = at_s - at_s % SECONDS_PER_DAY
        return popularity_on_day(self.item_latent, self.publish_s, day_start)

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows of `item_ids` in the item latents (and in `catalog_probability`'s answer)."""
        return self._rows(self.item_rows, item_ids, "items")

    def click_probability(
        self, user_ids: np.ndarray, item_ids: np.ndarray, at_s: int, scene: str
    ) -> np.ndarray:
        """P(click) of each (user, item) impression shown at `at_s` (unix seconds) on page
        `scene`: the sigmoid of the world's click logit (no product page link: the simulated
        feeds are not product pages)."""
        users = self._rows(self.user_rows, user_ids, "users")
        items = self.rows_of(item_ids)
        position = np.full(len(items), POSITIONS.index(scene))
        logit, _ = click_logit(
            self.item_latent, self.user_latent, users, items, self.popularity(at_s)[items],
            position, np.zeros(len(items), dtype=bool),
        )  # fmt: skip
        return 1.0 / (1.0 + np.exp(-logit))

    def catalog_probability(self, user_id: int, at_s: int, scene: str) -> np.ndarray:
        """P(click) of every catalog item for one user (row-aligned with `item_ids`)."""
        return self.click_probability(
            np.full(len(self.item_ids), user_id), self.item_ids, at_s, scene
        )
