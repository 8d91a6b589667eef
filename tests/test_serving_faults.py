"""Faults survived by the served bento (issue #16, part 4): one `bentoml serve` with two
workers, the Redis online store (a real redis-server) and the index shared through a real
milvus-lite server, under mixed /recommend + /events traffic.

- Redis killed mid-load and started again: answers stay 200, flagged `online_store`, and
  turn whole again without restarting the service; nothing of the data is lost (Redis runs
  with its append-only file fsync'd per write, as a production online store would).
- The milvus-lite server killed and started again on its port: the same, flagged
  `vector_index`.
- Snapshot reloads while Redis is down keep the previous snapshot (serving/online_features.py).
- The event log's disk full: 503 naming the cause, nothing acknowledged that is not on disk.
"""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import pandas as pd
import psutil
import pytest

from index.server import LiteServer
from mmrec import event_log
from mmrec.feast_store import open_store
from mmrec.loopback import RedisServer
from mmrec.settings import Settings
from mmrec.vocab import POSITIONS
from serving.bento_process import BentoServer, build_bento, workspace_env
from serving.pipeline import ONLINE_STORE
from serving.recall import VECTOR_INDEX
from tests.conftest import materialized_into_redis, redis_server, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.redis]
SNAPSHOT_REFRESH_S = 1  # the item snapshot reloads this often: reloads happen during a fault
RECOVERED_RUN = 20  # this many /recommend answers in a row whole: both workers recovered
RECOVERY_TIMEOUT_S = 60
# a degraded answer comes this soon: waiting on a dead backend is no better than failing
DEGRADED_WITHIN_S = 3.0


@dataclass(frozen=True)
class Service:
    """The served bento and the backends a test may break."""

    url: str
    settings: Settings
    redis: RedisServer
    index: LiteServer
    log_file: Path
    users: list[int]  # users with a click history (their requests query the vector index)
    items: list[int]


@pytest.fixture(scope="module")
def service(
    serving_world: Settings, serving_config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The module's world on its own Redis and its own index server, served by 2 workers."""
    root = tmp_path_factory.mktemp("faults")
    redis = redis_server(root / "redis", appendonly=True)
    settings = materialized_into_redis(serving_world, redis.url)
    index = LiteServer(root / "index" / "milvus.db").start()
    ws = str(settings.workspace)
    run_cli("index", "build", "--model", serving_config.recall_model, "--uri", index.uri, "-w", ws)
    env = {
        **workspace_env(settings),
        "MMREC_RECALL_MODEL": serving_config.recall_model,
        "MMREC_RANK_MODEL": serving_config.rank_model,
        "MMREC_MILVUS_URI": index.uri,
        "MMREC_TORCH_THREADS": "1",
        "MMREC_SERVING_WORKERS": "2",
        "MMREC_SNAPSHOT_REFRESH_S": str(SNAPSHOT_REFRESH_S),
    }
    clicks = (
        open_store(settings)
        .get_online_features(
            features=["user_behavior_seq:item_click_seq"],
            entity_rows=[{"user_id": u} for u in range(1, 80)],
        )
        .to_dict()
    )
    users = [u for u, seq in zip(clicks["user_id"], clicks["item_click_seq"], strict=True) if seq]
    items = pd.read_parquet(settings.raw_dir / "items.parquet", columns=["item_id"]).item_id
    log_file = root / "serve.log"
    try:
        with BentoServer(build_bento(env), env, log_file) as running:
            yield Service(running.url, settings, redis, index, log_file, users, items.tolist())
    finally:
        index.stop()
        redis.stop()


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it came
    path: str
    status: int  # 0: no HTTP answer at all
    seconds: float  # how long it took
    degraded: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()  # what an /events answer acknowledged


class Traffic:
    """Mixed POST /recommend and /events (2:1) from `clients` threads, back to back, while
    the `with` block runs; every answer is kept in `answers`, in arrival order. Each request
    opens its own connection so that the kernel spreads them over the workers (a kept-alive
    connection would stay on one)."""

    def __init__(self, service: Service, clients: int = 4) -> None:
        self.service = service
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def _client(self, n: int) -> None:
        rng = random.Random(n)
        for sent in range(10**9):
            if self._stop.is_set():
                return
            user = rng.choice(self.service.users)
            if sent % 3 == 2:
                event = {
                    "user_id": user,
                    "event_type": "click",
                    "item_id": rng.choice(self.service.items),
                }
                path, body = "/events", {"events": [event]}
            else:
                path, body = "/recommend", {"user_id": user, "scene": POSITIONS[sent % 3], "k": 10}
            started = time.monotonic()
            try:
                resp = httpx.post(f"{self.service.url}{path}", json=body, timeout=60)
            except httpx.HTTPError:
                self.answers.append(Answer(time.monotonic(), path, 0, time.monotonic() - started))
                continue
            out = resp.json() if resp.status_code == 200 else {}
            self.answers.append(
                Answer(
                    time.monotonic(), path, resp.status_code, time.monotonic() - started,
                    tuple(out.get("degraded", ())), tuple(out.get("event_ids", ())),
                )
            )  # fmt: skip

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def wait_for(
        self, found: Callable[[list[Answer]], bool], since: float, timeout_s: float, what: str
    ) -> None:
        """Wait until `found(answers that came after since)`; fail saying `what` if it never is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if found([a for a in list(self.answers) if a.at > since]):
                return
            time.sleep(0.1)
        seen = Counter((a.path, a.status, a.degraded) for a in self.answers if a.at > since)
        pytest.fail(f"no {what} within {timeout_s} s; answers since: {dict(seen)}")


def flagged(part: str, path: str) -> Callable[[list[Answer]], bool]:
    """Some answer on `path` names `part` as degraded."""
    return lambda answers: any(a.path == path and part in a.degraded for a in answers)


def whole_again(answers: list[Answer]) -> bool:
    """The last RECOVERED_RUN /recommend answers are all whole."""
    recent = [a for a in answers if a.path == "/recommend"][-RECOVERED_RUN:]
    return len(recent) == RECOVERED_RUN and all(a.status == 200 and not a.degraded for a in recent)


def assert_answered_in_time(traffic: Traffic, part: str) -> None:
    """Every answer was a 200, and those flagged `part` came within DEGRADED_WITHIN_S."""
    statuses = Counter((a.path, a.status) for a in traffic.answers)
    assert {status for _, status in statuses} == {200}, dict(statuses)
    slowest = max(a.seconds for a in traffic.answers if part in a.degraded)
    assert slowest < DEGRADED_WITHIN_S, f"a degraded answer took {slowest:.1f} s"


def test_redis_killed_mid_load_degrades_then_recovers_without_a_restart(service: Service) -> None:
    with Traffic(service) as traffic:
        traffic.wait_for(whole_again, 0, 60, "whole answers before the fault")
        killed = time.monotonic()
        service.redis.kill()
        traffic.wait_for(flagged(ONLINE_STORE, "/recommend"), killed, 30, "degraded /recommend")
        traffic.wait_for(flagged(ONLINE_STORE, "/events"), killed, 30, "degraded /events")
        restarted = time.monotonic()
        service.redis.start()
        traffic.wait_for(whole_again, restarted, RECOVERY_TIMEOUT_S, "recovery")
    assert_answered_in_time(traffic, ONLINE_STORE)
    # acknowledged while the online store was down: the events are in the log all the same
    acknowledged = {i for a in traffic.answers if a.path == "/events" for i in a.event_ids}
    logged = pd.concat(pd.read_parquet(p) for p in event_log.segments(service.settings))
    assert acknowledged <= set(logged.event_id)
    # the store came back with its data: a user with history is served from it
    answer = httpx.post(
        f"{service.url}/recommend", json={"user_id": service.users[0], "scene": "home"}, timeout=30
    ).json()
    assert (answer["degraded"], answer["cold_start"]) == ([], False)


def _index_process(index: LiteServer) -> psutil.Process:
    """The milvus-lite binary serving `index` (a child of this test process)."""
    found = []
    for child in psutil.Process().children():
        try:
            if str(index.db_file) in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a child another test left dead (a crashed Spark JVM did): not the server
    assert len(found) == 1, found
    return found[0]


def test_index_server_killed_and_restarted_degrades_then_recovers(service: Service) -> None:
    with Traffic(service) as traffic:
        traffic.wait_for(whole_again, 0, 60, "whole answers before the fault")
        killed = time.monotonic()
        _index_process(service.index).kill()  # as the OOM killer would
        traffic.wait_for(flagged(VECTOR_INDEX, "/recommend"), killed, 30, "degraded /recommend")
        service.index.stop()  # releases the file's lock (the process is gone already)
        restarted = time.monotonic()
        service.index.start()  # the same file on the same port
        traffic.wait_for(whole_again, restarted, RECOVERY_TIMEOUT_S, "recovery")
    assert_answered_in_time(traffic, VECTOR_INDEX)


def test_snapshot_reloads_while_redis_is_down_keep_serving_the_previous_snapshot(
    service: Service,
) -> None:
    """With Redis down every request is served without user features, so the answer to one
    request depends only on the item snapshot: it must not change across reloads. The workers
    serve a snapshot version's files (serving/snapshot_files.py): a reload with nothing
    materialized since reads nothing, so Redis being down cannot fail it (a reload that must
    read a new version and fails is tests/test_serving_snapshot_files.py's)."""

    def ask(redis_down: bool = True) -> tuple[str, list[tuple[int, float]]]:
        """The item snapshot version that served the answer, and the answer."""
        body = {"user_id": service.users[0], "scene": "home", "k": 10}
        resp = httpx.post(f"{service.url}/recommend", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert (ONLINE_STORE in out["degraded"]) == redis_down and out["items"]
        return out["models"]["item_snapshot"], [
            (i["item_id"], round(i["score"], 6)) for i in out["items"]
        ]

    # The previous test's events may still be reaching the online store, so one worker's
    # snapshot can be newer than the other's: wait until both serve one version that held for
    # two refresh periods (a reload of the 6k-item snapshot takes seconds on a loaded machine).
    deadline, before = time.monotonic() + 180, set()
    while len(seen := {ask(redis_down=False)[0] for _ in range(8)}) > 1 or seen != before:
        assert time.monotonic() < deadline, f"the two workers never served one snapshot: {seen}"
        before = seen
        time.sleep(2 * SNAPSHOT_REFRESH_S)
    service.redis.kill()
    try:
        first = ask()
        for _ in range(4):  # several refresh periods: each worker reloads meanwhile
            time.sleep(SNAPSHOT_REFRESH_S)
            assert [ask() for _ in range(4)] == [first] * 4
        assert "item snapshot reload failed" not in service.log_file.read_text()
    finally:
        service.redis.start()


@pytest.fixture
def full_disk(service: Service) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted over the event log's folder; yields the path of a file to grow
    until the disk is full. A real ENOSPC from the kernel, on the service's own write path
    (an unwritable folder, the other way a log write fails, is in test_serving_http.py);
    mounting needs root (CAP_SYS_ADMIN)."""
    folder = event_log.log_dir(service.settings)
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs (run as root to test a full disk): {mount.stderr.strip()}"
        )
    try:
        yield folder / "filler"
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def _fill(path: Path) -> None:
    """Write `path` until the file system has no space left."""
    with path.open("wb") as sink:
        try:
            while True:
                sink.write(b"\0" * 65536)
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


def test_a_full_event_log_disk_answers_503_and_acknowledges_nothing(
    service: Service, full_disk: Path
) -> None:
    user = service.users[1]
    store = open_store(service.settings)

    def clicks() -> list[int]:
        values = store.get_online_features(
            features=["user_behavior_seq:item_click_seq"], entity_rows=[{"user_id": user}]
        )
        return list(values.to_dict()["item_click_seq"][0] or [])

    item, other = [i for i in service.items if i not in clicks()][:2]
    event = {"user_id": user, "event_type": "click", "item_id": item, "event_id": "full-1"}
    warm = {**event, "event_id": "full-0", "item_id": other}
    assert (
        httpx.post(f"{service.url}/events", json={"events": [warm]}, timeout=30).status_code == 200
    )
    _fill(full_disk)
    before = event_log.segments(service.settings)
    resp = httpx.post(f"{service.url}/events", json={"events": [event]}, timeout=30)
    assert resp.status_code == 503, resp.text
    # the id record (SQLite) is read first and fails first: "disk I/O error"
    assert re.search(r"cannot be written.*Fix: free disk space", resp.json()["error"])
    assert event_log.segments(service.settings) == before
    assert not [p for p in full_disk.parent.rglob("*.tmp")]  # no half-written segment left
    assert item not in clicks()  # not pushed either
    full_disk.unlink()
    resp = httpx.post(f"{service.url}/events", json={"events": [event]}, timeout=30)
    assert resp.status_code == 200 and resp.json()["appended"] == 1, resp.text
    assert item in clicks()
