"""The experiment's arms and who gets which: a hash of the user id, as an A/B platform assigns.

Each arm names the bento that serves it (a model arm is a bento of its own: the same service
built with another MMREC_RANK_MODEL, as a canary is deployed), the policy its requests ask for
(`RecommendRequest.policy`, serving/policies.py) and, for the two oracles, how the simulator
re-ranks by the world's true click probability:

- `oracle_candidates` asks the full bento for its recalled candidates (`include_candidates`)
  and shows the k of them the user is likeliest to click: the ceiling of this candidate set,
  so the gap to it is what ranking and mixing leave on the table;
- `oracle_catalog` shows the k items of the whole catalog the user is likeliest to click
  (never one they clicked before): the ceiling of the world, so the gap between the oracles is
  what recall leaves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mmrec.errors import UserError
from serving.policies import POPULAR, RANDOM, RANKED

FULL_BENTO, NO_GMF_BENTO = "full", "no_gmf"
# The ranking model each bento serves (BentoML store names); `mmrec train rank --no-dsn
# --no-min --model-name ranking-no-gmf` trains the second.
BENTO_MODELS = {FULL_BENTO: "ranking", NO_GMF_BENTO: "ranking-no-gmf"}
CANDIDATES, CATALOG = "candidates", "catalog"  # what an oracle re-ranks


@dataclass(frozen=True)
class Arm:
    name: str
    bento: str  # the bento its requests (and events) go to
    policy: str = RANKED
    oracle: str | None = None  # None, CANDIDATES or CATALOG
    about: str = ""

    @property
    def asks(self) -> bool:
        """Whether the arm's users send POST /recommend (the catalog oracle does not)."""
        return self.oracle != CATALOG


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("full", FULL_BENTO, about="recall, the GMF ranker (DSN + MIN), mixed ranking"),
        Arm("no_gmf", NO_GMF_BENTO, about="the same with the ranker trained --no-dsn --no-min"),
        Arm("popularity", FULL_BENTO, POPULAR, about="the catalog's most clicked of 7 days"),
        Arm("random", FULL_BENTO, RANDOM, about="uniform over the catalog"),
        Arm(
            "oracle_candidates",
            FULL_BENTO,
            oracle=CANDIDATES,
            about="the full bento's recalled candidates by true click probability",
        ),
        Arm(
            "oracle_catalog",
            FULL_BENTO,
            oracle=CATALOG,
            about="the whole catalog by true click probability",
        ),
    )
}
ORACLES = tuple(name for name, arm in ARMS.items() if arm.oracle)


def parse_arms(text: str) -> tuple[Arm, ...]:
    """Comma-separated arm names, in ARMS order; a UserError naming the unknown ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ARMS))
    if unknown or not names:
        raise UserError(f"unknown arms {unknown or text!r}: choose from {', '.join(ARMS)}")
    return tuple(arm for name, arm in ARMS.items() if name in names)


def assign_arms(user_ids: np.ndarray, arms: tuple[Arm, ...], salt: str) -> list[Arm]:
    """Each user's arm: sha256(salt:user_id) modulo the arms, so a user keeps an arm for the
    whole experiment and another salt (another experiment, another seed) reshuffles them."""
    out = []
    for user_id in np.asarray(user_ids, dtype=np.int64).tolist():
        digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
        out.append(arms[int.from_bytes(digest[:8], "big") % len(arms)])
    return out
