"""The recommendation pipeline of one request, without the HTTP layer (serving/service.py).

features (Feast online: the user's `ranking`/`recall` views, seed SKUs' categories) -> seeds
-> recall channels merged to `ServingConfig.candidates` items -> the candidates' `ranking`
features -> the MMoE in one forward pass -> mixed ranking across material queues -> top k.
A request may ask for an experiment's baseline policy instead (popular, random:
serving/policies.py), and for the ids of the candidates it recalled (`include_candidates`).

Degraded paths, flagged in the response instead of failing: the online store failing gives
the cold-start path (no history: context SKU, popular, fresh); Milvus failing gives the
in-process channels (term, fresh, popular). An unknown user is the cold-start path, unflagged.

The "world" clock (the data's end) is read once per item snapshot version and kept in its files
(serving/snapshot_files.py), like the ranker's item side: every worker serving a version answers
at one clock, also one started after /events logged a day past the end (which moves
`world_end` one day on). `models.item_snapshot` in an answer is that version's key.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from index.build import load_recall_model, neighbours_root
from index.channels import RecallFilter
from index.collections import ContentIndex
from index.connection import open_index
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from mmrec.world_manifest import world_end
from serving.config import ServingConfig
from serving.mixing import item_values, mix
from serving.online_features import ONLINE_STORE_ERRORS, CandidateFeatureReader, fail_fast
from serving.policies import RANKED, baseline_items
from serving.ranker import OnlineRanker, RankedCandidates, load_ranking_model
from serving.recall import RecallResult, RecallStage, Seeds
from serving.schemas import RecommendedItem, RecommendRequest, RecommendResponse
from serving.snapshot_files import Persisted, SnapshotFiles, snapshots_root

log = logging.getLogger(__name__)

ONLINE_STORE = "online_store"  # the degraded part named in responses
SKU_CATEGORY_REF = "sku_attributes:sku_category"  # in the `recall` service (S2V seeds)
WORLD_CLOCK = "world_clock"  # the reader's snapshot.derived key of the "world" clock
# the clock (unix seconds) as a snapshot version's files hold it
CLOCK_FILES = Persisted(
    to_arrays=lambda unix: {"unix": np.asarray([unix], dtype=np.int64)},
    from_arrays=lambda arrays: int(arrays["unix"][0]),
)


@dataclass(frozen=True)
class Recommendation:
    """A response plus what produced it (for tests and debugging, not sent over HTTP)."""

    response: RecommendResponse
    ranked: RankedCandidates | None
    request_ts: int
    channels: dict[str, int]  # candidates per channel (of the slot each took)


class RecommendationPipeline:
    """Loads models, feature store, index and snapshots once; answers requests."""

    def __init__(
        self,
        settings: Settings,
        config: ServingConfig | None = None,
        *,
        milvus_uri: str | None = None,
        store=None,
    ) -> None:
        self.settings = settings
        self.config = config or ServingConfig.from_settings(settings)
        self.store = store or open_store(settings)
        fail_fast(self.store)  # a request answers degraded rather than wait for Redis
        self.recall_model = load_recall_model(settings, self.config.recall_model)
        self.index = ContentIndex(
            open_index(settings, milvus_uri), refresh_s=self.config.index_refresh_s
        )
        self.recall = RecallStage(
            self.recall_model,
            self.index,
            self.config.quotas,
            self.config.seed_items,
            lists_root=neighbours_root(settings),
        )
        ranking_model = load_ranking_model(settings, self.config.rank_model)
        self.reader = CandidateFeatureReader(
            self.store,
            ranking_model.feature_service,
            self.recall.catalog.item_id.to_numpy(np.int64),
            self.config.snapshot_refresh_s,
            # one snapshot version for every worker: the ranker's item side depends on its
            # model; under the "world" clock the version's files hold the clock too
            files=SnapshotFiles(
                snapshots_root(settings),
                depends_on=f"{ranking_model.tag} clock:{self.config.clock}",
            ),
        )
        if self.config.clock == "world":  # the data's end when the version is first loaded
            self.reader.on_load(
                WORLD_CLOCK,
                lambda snapshot: int(world_end(settings).timestamp()),
                persisted=CLOCK_FILES,
            )
        # the popular fallback follows each snapshot's clicks (ranked on the reload's thread)
        self.reader.on_load(
            "popularity",
            lambda snapshot: self.recall.use_popularity(snapshot.column("clicks_7d").astype(float)),
        )
        self.ranker = OnlineRanker(ranking_model, self.reader, self.recall_model)
        self.reader.snapshot()  # load the items (and the ranker's item side) now, not in a request
        self.models = {
            "recall": self.recall_model.tag,
            "ranking": self.ranker.tag,
            "index": self.index.collection,
        }

    def now(self) -> int:
        """Request time in unix seconds: under the "world" clock the current item snapshot's
        (the data's end when its version was first loaded), else the wall clock."""
        if self.config.clock == "world":
            return self.reader.snapshot().derived[WORLD_CLOCK]
        return int(datetime.now(UTC).timestamp())

    def user_features(self, user_id: int) -> tuple[dict[str, list], bool]:
        """The user's online features and whether the online store answered."""
        try:
            return self.reader.read_user(user_id), True
        except ONLINE_STORE_ERRORS as err:  # serve without history
            log.warning("online store failed for user %d: %s", user_id, err)
            names = [ref.split(":", 1)[1] for ref in self.reader.layout.user_refs]
            return {"user_id": [user_id], **{n: [None] for n in names}}, False

    def _sku_categories(self, sku_ids: list[int]) -> list[str | None]:
        if not sku_ids:
            return []
        rows = [{"sku_id": s} for s in sku_ids]
        values = self.store.get_online_features(features=[SKU_CATEGORY_REF], entity_rows=rows)
        return values.to_dict()["sku_category"]

    def seeds(self, request: RecommendRequest, user: dict[str, list]) -> tuple[Seeds, bool]:
        """Recall seeds from the user's features; False when the SKU lookup failed."""
        clicked = list(user.get("item_click_seq", [None])[0] or [])
        skus = list(user.get("sku_click_seq", [None])[0] or [])[: self.config.seed_skus]
        if request.context_sku_id is not None:
            skus = [request.context_sku_id, *[s for s in skus if s != request.context_sku_id]]
        affinity = user.get("cdr_category_affinity", [None])[0]
        ok = True
        try:
            categories = self._sku_categories(skus)
        except ONLINE_STORE_ERRORS as err:  # S2V has no seeds this time
            log.warning("sku lookup failed: %s", err)
            categories, skus, ok = [], [], False
        tags = self.recall.interest_tags(
            affinity, clicked[: self.config.seed_items], self.config.interest_tags
        )
        tags += [c for c in categories if c is not None and c not in tags]
        seeds = Seeds(
            clicked_items=[int(i) for i in clicked],
            sku_ids=[int(s) for s in skus],
            sku_categories=categories,
            category_affinity=list(affinity) if affinity is not None else None,
            interest_tags=tags,
        )
        return seeds, ok

    def recommend(self, request: RecommendRequest) -> Recommendation:
        """Answer one request (already validated by its pydantic model), from one item
        snapshot throughout: its clock, item features and ranker item side."""
        with self.reader.pinned():
            return self._recommend(request)

    def _recommend(self, request: RecommendRequest) -> Recommendation:
        timings: dict[str, float] = {}
        started = clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round(timings.get(stage, 0.0) + (now - clock) * 1000, 3)
            clock = now

        degraded: list[str] = []
        user, online = self.user_features(request.user_id)
        seeds, sku_ok = self.seeds(request, user) if online else (Seeds(), False)
        if not (online and sku_ok):
            degraded.append(ONLINE_STORE)
        if not online and request.context_sku_id is not None:
            # its category is unknown too: S2V cannot encode it, so the fallbacks answer
            seeds.sku_ids, seeds.sku_categories = [request.context_sku_id], [None]
        lap("features")
        filters = RecallFilter(
            materials=tuple(request.materials) if request.materials else None,
            exclude_ids=frozenset(seeds.clicked_items),
        )
        items: list[RecommendedItem] = []
        request_ts = self.now()
        if request.policy == RANKED:
            recalled = self.recall.recall_candidates(
                seeds, filters, self.config.candidates, self.ranker.max_seq_len
            )
        else:  # an experiment's baseline arm (serving/policies.py): nothing to recall or rank
            recalled = RecallResult([], ())
            seed = (request.user_id % 2**64, request_ts)  # an unknown user's key may be < 0
            items = baseline_items(self.recall, request.policy, filters, request.k, seed)
        degraded += recalled.failed
        lap("recall")
        ranked = None
        if recalled.candidates:
            ids = [c.item_id for c in recalled.candidates]
            features = self.reader.read(
                request.user_id, ids, request={"request_ts": request_ts}, user=user
            )
            lap("features")
            ranked = self.ranker.rank(features, request.scene)
            lap("rank")
            items = self._mixed(request, recalled.candidates, ranked)
            lap("mix")
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        response = RecommendResponse(
            user_id=request.user_id,
            scene=request.scene,
            items=items,
            degraded=list(dict.fromkeys(degraded)),
            cold_start=not seeds.clicked_items,
            candidates=len(recalled.candidates),
            timings_ms=timings,
            models={**self.models, "item_snapshot": self.reader.snapshot_name},
            candidate_ids=(
                [c.item_id for c in recalled.candidates] if request.include_candidates else None
            ),
        )
        channels = Counter(c.channel for c in recalled.candidates)
        return Recommendation(response, ranked, request_ts, dict(channels))

    def _mixed(self, request: RecommendRequest, candidates, ranked: RankedCandidates) -> list:
        """Mixed ranking over the candidates the ranker scored, as response items."""
        by_id = {c.item_id: c for c in candidates}
        materials = self.recall.material_of(ranked.item_ids)
        values = item_values(ranked.task_probs, self.config.mix.task_weights)
        config = self.config.mix
        if request.materials:
            config = config.restricted_to(request.scene, request.materials)
        order = mix(ranked.item_ids, materials, values, request.scene, request.k, config)
        if len(order) < request.k:  # quotas shape the list, they never leave it short
            placed = set(order)
            rest = [int(i) for i in np.argsort(-values, kind="stable") if int(i) not in placed]
            order += rest[: request.k - len(order)]
        tasks = list(ranked.task_probs)
        return [
            RecommendedItem(
                item_id=int(ranked.item_ids[i]),
                material=materials[i],
                score=float(values[i]),
                task_scores={t: float(ranked.task_probs[t][i]) for t in tasks},
                channel=by_id[int(ranked.item_ids[i])].channel,
                found_by=list(by_id[int(ranked.item_ids[i])].found_by),
            )
            for i in order
        ]
