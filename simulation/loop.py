"""The closed loop, one simulated day at a time, through the platform's own path.

A day (`SimulatedDay`): the bentos are served afresh (`bentoml serve`, the README's way; the
arms' bentos side by side, sharing the index through a milvus-lite server), so their world
clock stands at the end of the data; every sampled user opens the feed once (a real POST
/recommend to their arm's bento with its policy; the two oracles re-rank by the truth); the k
items answered are impressions, clicks are drawn from the world's click model for exactly
those (user, item, page) impressions, and both go back through POST /events, which stamps
them with the service clock: the first second of the day after the data, so the day's events
make a new data day. Then the day is folded into the features (`mmrec features build --day D`
and `materialize`) and, on the schedule, everything is retrained through `mmrec run` (and the
second ranker through `mmrec train rank --no-dsn --no-min`). The next day's bentos start at
the new end of the data.

Everything happens in a copy of the workspace (`prepare_workspace`): the demo world is left as
it was, and each seed starts from the same state. The copy always uses the embedded stores
(SQLite online store, the milvus-lite file), whatever the environment says, so a run never
writes into a shared Redis or Milvus.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pandas as pd

from feature_pipelines.run import build_features
from index.build import build_index
from index.server import LiteServer
from mmrec.errors import UserError
from mmrec.event_log import events_view, load_served, log_days
from mmrec.feast_store import apply_repo, materialize, open_store
from mmrec.io import progress
from mmrec.settings import Settings
from mmrec.vocab import LATEST_RECALL_MODEL
from mmrec.world_manifest import world_end
from models.store import KNOWN_ITEMS, load_arrays, stored_model
from serving.bento_process import BentoServer, build_bento, workspace_env
from serving.policies import RANKED
from simulation.arms import ARMS, BENTO_MODELS, CANDIDATES, CATALOG, Arm, assign_arms
from simulation.latency import summarize_histograms
from simulation.parity import compare, embedded_settings, rebuild
from simulation.report import EVENTS
from simulation.truth import HiddenWorld

log = logging.getLogger(__name__)

MMREC = str(Path(sys.executable).with_name("mmrec"))
SCENES = ("home", "inner")  # feeds without a product page (detail needs a context SKU)
EVENTS_PER_POST = 1000  # the API's limit per request (serving/schemas.py)
# What a copy leaves out: the original's Feast registry and online store (the copy applies and
# materializes its own), earlier simulations, and of the BentoML home all but the models.
SKIPPED_IN_DATA = ("feast", "simulation")
SKIPPED_IN_MODEL_STORE = ("bentos", "envs", "tmp", "prometheus_multiproc_dir")


class SimulationError(UserError):
    """The served bento answered what a client cannot go on with; the message says what."""


@dataclass(frozen=True)
class SimulationConfig:
    """What one run simulates (one seed)."""

    days: int = 3
    users: int = 1500  # sampled users (all when the world has fewer)
    k: int = 10  # items a feed shows
    scene: str = "home"
    seed: int = 0  # user sample, arm assignment and click draws
    retrain_every: int = 1  # days between retrains through `mmrec run` (0: never)
    arms: tuple[Arm, ...] = tuple(ARMS.values())
    users_per_post: int = 50  # users whose events go in one POST /events
    # after each day's fold, rebuild the features from scratch and compare (simulation/parity.py)
    check_parity: bool = False

    def __post_init__(self) -> None:
        if self.days < 1 or self.users < 1 or self.users_per_post < 1:
            raise UserError(
                f"days, users and users_per_post must be >= 1, got {self.days}, {self.users}, "
                f"{self.users_per_post}"
            )
        if not 1 <= self.k <= 200:
            raise UserError(f"k must be in 1..200 (the API's limit), got {self.k}")
        if self.scene not in SCENES:
            raise UserError(f"scene must be one of {SCENES}, got {self.scene!r}")
        if self.retrain_every < 0 or self.seed < 0:
            raise UserError(
                f"retrain_every and seed must be >= 0, got {self.retrain_every}, {self.seed}"
            )
        if not self.arms:
            raise UserError("at least one arm")

    def retrains_after(self, day: int) -> bool:
        """Whether the models are retrained after simulated day `day` (1-based; never after
        the last one, whose models would serve nobody)."""
        return self.retrain_every > 0 and day < self.days and day % self.retrain_every == 0

    @property
    def bentos(self) -> tuple[str, ...]:
        """The bentos the arms need (the catalog oracle's events go to the full one)."""
        return tuple(dict.fromkeys(arm.bento for arm in self.arms))


def platform_command(settings: Settings, *args: str) -> None:
    """`mmrec ARGS -w WORKSPACE` as a child process, its output on this terminal; the
    environment points every store at the workspace (its `Settings.environment()`)."""
    command = [MMREC, *args, "--workspace", str(settings.workspace)]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, env={**os.environ, **settings.environment()})
    if result.returncode != 0:
        raise SimulationError(f"`{' '.join(command)}` exited {result.returncode}")


def _copy_ignore(source: Settings):
    def ignore(folder: str, names: list[str]) -> set[str]:
        where = Path(folder)
        if where == source.data_dir:
            return set(names) & set(SKIPPED_IN_DATA)
        if where == source.data_dir / "bentoml":
            return set(names) & set(SKIPPED_IN_MODEL_STORE)
        return {"__pycache__"} & set(names)

    return ignore


def prepare_workspace(source: Settings, target: Path) -> Settings:
    """A copy of `source` at `target` (replaced when there) with its own registry, online
    store, model store and index, applied and materialized as the source's data stands."""
    if target.exists():
        shutil.rmtree(target)
    ignore = _copy_ignore(source)
    shutil.copytree(source.feature_repo, target / "feature_repo", ignore=ignore)
    shutil.copytree(source.data_dir, target / "data", ignore=ignore)
    settings = embedded_settings(target, source)
    if source.bentoml_home is not None:  # the models live outside the source's data/
        shutil.copytree(
            source.model_store_dir / "models",
            settings.model_store_dir / "models",
            dirs_exist_ok=True,
        )
    apply_repo(settings)
    materialize(open_store(settings), world_end(settings))
    if not Path(settings.index_uri).exists():  # the source's index is a Milvus server
        build_index(settings, LATEST_RECALL_MODEL, None)
    return settings


def latest_tag(settings: Settings, name: str) -> str:
    """The exact tag of `name:latest` in the workspace's model store."""
    return str(stored_model(settings, f"{name}:latest").tag)


def has_model(settings: Settings, name: str) -> bool:
    import bentoml

    try:
        latest_tag(settings, name)
    except bentoml.exceptions.NotFound:
        return False
    return True


def train_second_ranker(settings: Settings) -> None:
    """The no-GMF ranker on the workspace's current training set."""
    platform_command(
        settings, "train", "rank", "--no-dsn", "--no-min", "--model-name", BENTO_MODELS["no_gmf"]
    )


@dataclass
class Bentos:
    """The bento of each arm's ranking model, built once per model version, and the folder
    each is served from (`serving_home`)."""

    settings: Settings
    homes: Path  # a BENTOML_HOME per bento being served
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    built: dict[tuple[str, str], str] = field(default_factory=dict)

    def env(self, bento: str, index_uri: str) -> dict[str, str]:
        """What `bentoml build` and `serve` get: the workspace, the exact models, the index
        server, the world clock, and a token for /events (the simulator is a client like any
        other)."""
        return {
            **workspace_env(self.settings),
            "MMREC_MILVUS_URI": index_uri,
            "MMREC_RECALL_MODEL": latest_tag(self.settings, "recall"),
            "MMREC_RANK_MODEL": latest_tag(self.settings, BENTO_MODELS[bento]),
            "MMREC_SERVING_CLOCK": "world",
            "MMREC_API_TOKEN": self.token,
            "MMREC_API_TOKEN_FILE": "",
        }

    def serving_home(self, bento: str) -> Path:
        """A BENTOML_HOME of `bento`'s own whose model store is the workspace's. Two `bentoml
        serve` of one home share one Prometheus multiprocess folder, and the second to start
        empties it (bentoml/serving.py, `ensure_prometheus_dir`): the first one's /metrics
        would lose every request."""
        home = self.homes / bento
        home.mkdir(parents=True, exist_ok=True)
        models = home / "models"
        if not models.exists():
            models.symlink_to(self.settings.model_store_dir / "models", target_is_directory=True)
        return home

    def server(self, bento: str, index_uri: str, log_file: Path) -> BentoServer:
        """`bentoml build` (when its models changed) into the workspace's store, then its
        `bentoml serve` (not started) from its own home, by the built bento's folder."""
        from bentoml._internal.bento import BentoStore

        env = self.env(bento, index_uri)
        key = (env["MMREC_RECALL_MODEL"], env["MMREC_RANK_MODEL"])
        if key not in self.built:
            self.built[key] = build_bento(env)
            log.info("built bento %s for %s", self.built[key], bento)
        path = BentoStore(str(self.settings.model_store_dir / "bentos")).get(self.built[key]).path
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env["BENTOML_HOME"] = str(self.serving_home(bento))
        return BentoServer(str(path), env, log_file)


@dataclass
class Client:
    """The simulated shoppers' app: POST /recommend and /events with the bearer token, the
    client-side time of each call kept by what it was for (an arm's feed, or events)."""

    url: str
    token: str
    timings_ms: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )

    def _post(self, path: str, body: dict[str, Any], label: str) -> dict[str, Any]:
        started = time.perf_counter()
        response = self.http.post(path, json=body)
        self.timings_ms.setdefault(label, []).append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SimulationError(f"POST {path} answered {response.status_code}: {response.text}")
        return response.json()

    def recommend(self, body: dict[str, Any], arm: str) -> dict[str, Any]:
        return self._post("/recommend", body, arm)

    def post_events(self, events: list[dict[str, Any]]) -> None:
        """Post `events` (each with its own event_id, so a retry is stored once)."""
        for start in range(0, len(events), EVENTS_PER_POST):
            chunk = events[start : start + EVENTS_PER_POST]
            answer = self._post("/events", {"events": chunk}, EVENTS)
            if answer["appended"] + answer["duplicates"] != len(chunk) or answer["degraded"]:
                raise SimulationError(f"POST /events kept {answer} of {len(chunk)} events")

    def latency(self) -> dict[str, Any]:
        """The service's histograms (/metrics) and this client's timings."""
        return {
            "served": summarize_histograms(self.http.get("/metrics").text),
            "client": {label: _client_summary(ms) for label, ms in self.timings_ms.items()},
        }

    def close(self) -> None:
        self.http.close()


def clicked_items(settings: Settings, user_ids: np.ndarray) -> dict[int, np.ndarray]:
    """Every item each user clicked in the data so far (raw events and the served log)."""
    con = duckdb.connect()
    load_served(con, settings)
    events = events_view(con, settings)
    con.register("sampled", pd.DataFrame({"user_id": np.asarray(user_ids, dtype=np.int64)}))
    rows = con.execute(
        f"SELECT user_id, list(DISTINCT item_id) FROM {events} SEMI JOIN sampled USING (user_id) "
        "WHERE event_type = 'click' GROUP BY user_id"
    ).fetchall()
    return {int(user): np.asarray(items, dtype=np.int64) for user, items in rows}


@dataclass(frozen=True)
class Feed:
    """What one visit showed, and the two ceilings of the same user at the same moment."""

    shown: np.ndarray  # item ids, in order
    p_shown: np.ndarray  # their true click probabilities
    best_candidates: float  # expected clicks of the best k of the recalled candidates (NaN: none)
    best_catalog: float  # expected clicks of the best k of the catalog not clicked before


@dataclass
class SimulatedDay:
    """One simulated day: its clock, the hidden world and who is in which arm."""

    settings: Settings
    world: HiddenWorld
    config: SimulationConfig
    day: int  # 1-based
    users: np.ndarray
    arms: list[Arm]
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the bentos start before any of the day's events: their world clock is this
        self.clock_s = int(world_end(self.settings).timestamp())
        self.data_day = datetime.fromtimestamp(self.clock_s, UTC).strftime("%Y-%m-%d")
        known = load_arrays(self.settings, f"{BENTO_MODELS['full']}:latest").get(KNOWN_ITEMS)
        known = np.empty(0, np.int64) if known is None else np.asarray(known, np.int64)
        self.cold = np.setdiff1d(self.world.item_ids, known)  # what the served ranker never saw

    def _best(self, p: np.ndarray) -> float:
        return float(np.sort(p)[::-1][: self.config.k].sum())

    def feed(self, client: Client | None, arm: Arm, user: int, clicked: np.ndarray) -> Feed:
        """The k items the user's feed shows, in order: the arm's bento's answer, or an
        oracle's re-ranking by the truth."""
        k, world = self.config.k, self.world
        p_all = world.catalog_probability(user, self.clock_s, self.config.scene)
        unseen = ~np.isin(world.item_ids, clicked)
        best_catalog = self._best(p_all[unseen])
        candidates = None
        if arm.oracle == CATALOG:
            order = np.flatnonzero(unseen)[np.argsort(-p_all[unseen], kind="stable")[:k]]
            shown = world.item_ids[order]
        else:
            body: dict[str, Any] = {
                "user_id": user, "scene": self.config.scene, "k": k, "policy": arm.policy,
                "include_candidates": arm.policy == RANKED,
            }  # fmt: skip
            answer = client.recommend(body, arm.name)
            shown = np.asarray([item["item_id"] for item in answer["items"]], dtype=np.int64)
            if answer["candidate_ids"] is not None:
                candidates = np.asarray(answer["candidate_ids"], dtype=np.int64)
        best_candidates = np.nan
        if candidates is not None and len(candidates):
            p_candidates = p_all[world.rows_of(candidates)]
            best_candidates = self._best(p_candidates)
            if arm.oracle == CANDIDATES:
                shown = candidates[np.argsort(-p_candidates, kind="stable")[:k]]
        return Feed(shown, p_all[world.rows_of(shown)], best_candidates, best_catalog)

    def visit(
        self, client: Client | None, arm: Arm, user: int, clicked: np.ndarray
    ) -> list[dict[str, Any]]:
        """One user's visit: the feed, the clicks drawn for exactly those impressions; its
        record is kept, its events returned."""
        feed = self.feed(client, arm, user, clicked)
        rng = np.random.default_rng([self.config.seed, self.day, user])
        clicks = rng.random(len(feed.shown)) < feed.p_shown
        cold = np.isin(feed.shown, self.cold)
        self.records.append(
            {
                "seed": self.config.seed, "day": self.day, "data_day": self.data_day,
                "arm": arm.name, "user_id": user, "impressions": len(feed.shown),
                "clicks": int(clicks.sum()), "expected_clicks": float(feed.p_shown.sum()),
                "best_candidate_clicks": feed.best_candidates,
                "best_catalog_clicks": feed.best_catalog,
                "cold_impressions": int(cold.sum()), "cold_clicks": int((cold & clicks).sum()),
                "items": feed.shown.tolist(), "clicked": feed.shown[clicks].tolist(),
            }
        )  # fmt: skip
        prefix = f"sim{self.config.seed}-{self.data_day}-u{user}"
        return [
            {
                "user_id": user,
                "event_type": kind,
                "item_id": int(item),
                "position": self.config.scene,
                "source": "rec",
                "event_id": f"{prefix}-{slot}-{kind}",
            }
            for slot, item in enumerate(feed.shown.tolist())
            for kind in ("impression", "click")
            if kind == "impression" or clicks[slot]
        ]

    def run(self, bentos: Bentos, run_dir: Path) -> list[dict[str, Any]]:
        """Every sampled user's visit through their arm's bento; returns each bento's latency.

        The bentos share the index through a milvus-lite server and all start before the
        first request, so they answer at one clock; then the users come in their order, each
        to their arm's bento, and the events go back in batches."""
        clicked = clicked_items(self.settings, self.users)
        empty = np.empty(0, np.int64)
        with ExitStack() as stack:
            index = stack.enter_context(LiteServer(self.settings.index_uri))
            clients = {}
            for bento in self.config.bentos:
                log_file = run_dir / "logs" / f"day{self.day}-{bento}.log"
                server = stack.enter_context(bentos.server(bento, index.uri, log_file))
                clients[bento] = stack.enter_context(closing(Client(server.url, bentos.token)))
            pending: dict[str, list[dict[str, Any]]] = {bento: [] for bento in clients}
            visits = list(zip(self.users.tolist(), self.arms, strict=True))
            for i, (user, arm) in enumerate(progress(visits, f"day {self.day} ({self.data_day})")):
                client = clients[arm.bento]
                pending[arm.bento] += self.visit(client, arm, user, clicked.get(user, empty))
                if (i + 1) % self.config.users_per_post == 0 or i + 1 == len(visits):
                    for bento, events in pending.items():
                        if events:
                            clients[bento].post_events(events)
                    pending = {bento: [] for bento in clients}
            latency = [
                {"day": self.day, "data_day": self.data_day, "bento": bento, **client.latency()}
                for bento, client in clients.items()
            ]
        if (days := log_days(self.settings)) and days[-1] != self.data_day:
            raise SimulationError(
                f"day {self.day}'s events landed on {days[-1]}, not on {self.data_day}: the "
                "bentos' clocks disagree"
            )
        return latency


def _client_summary(timings_ms: list[float]) -> dict[str, float | None]:
    if not timings_ms:
        return {"count": 0, "p50_ms": None, "p99_ms": None}
    values = np.asarray(timings_ms)
    return {
        "count": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def fold_day(settings: Settings, data_day: str) -> None:
    """The day's served events into the features: `mmrec features build --day D`, then
    `mmrec features materialize` (up to the data's new end)."""
    build_features(settings, [data_day])
    materialize(open_store(settings), world_end(settings))


def check_parity(settings: Settings, scratch: Path) -> dict[str, Any]:
    """The loop's features against a from-scratch rebuild of the same events (parity.py)."""
    report = compare(settings, rebuild(settings, scratch))
    shutil.rmtree(scratch)
    if not report.equal:
        log.warning("the loop's features differ from a rebuild: %s", report.differences)
    return report.as_dict()


def retrain(settings: Settings) -> None:
    """Every model on the data so far: `mmrec run` (features .. rank .. recall .. index), then
    the second ranker."""
    platform_command(settings, "run")
    train_second_ranker(settings)


def sample_users(world: HiddenWorld, n: int, seed: int) -> np.ndarray:
    """`n` of the world's users (all when it has fewer), sorted."""
    ids = world.user_rows.to_numpy(np.int64)
    rng = np.random.default_rng([seed, 31])
    return np.sort(rng.choice(ids, size=min(n, len(ids)), replace=False))


def simulate(source: Settings, config: SimulationConfig, run_dir: Path) -> dict[str, Any]:
    """Run `config.days` simulated days on a copy of `source` under `run_dir`; returns the
    per-user-day records and the latency of every served day."""
    HiddenWorld.load(source)  # imported data: refuse before copying anything
    started = time.perf_counter()
    settings = prepare_workspace(source, run_dir / "workspace")
    world = HiddenWorld.load(settings)
    if "no_gmf" in config.bentos and not has_model(settings, BENTO_MODELS["no_gmf"]):
        train_second_ranker(settings)
    users = sample_users(world, config.users, config.seed)
    arms = assign_arms(users, config.arms, salt=f"mmrec-simulate-{config.seed}")
    bentos = Bentos(settings, run_dir / "serving")
    records, latency, days = [], [], []
    for day in range(1, config.days + 1):
        today = SimulatedDay(settings, world, config, day, users, arms)
        latency += today.run(bentos, run_dir)
        records += today.records
        fold_day(settings, today.data_day)
        record: dict[str, Any] = {"day": day, "data_day": today.data_day}
        if config.check_parity:
            record["parity"] = check_parity(settings, run_dir / "rebuild")
        record["retrained_after"] = config.retrains_after(day)
        if record["retrained_after"]:
            retrain(settings)
        days.append(record)
    return {
        "seed": config.seed,
        "workspace": str(settings.workspace),
        "days": days,
        "records": records,
        "latency": latency,
        "seconds": round(time.perf_counter() - started, 1),
    }
