"""No lost updates across workers (issue #16, part 2): the bento served with two worker
processes (the index shared through the session's `LiteServer`, as `bench/serving_bench.py
--workers 2` runs it) takes many concurrent POST /events for one user and keeps every event,
in the event log and in the user's online sequence (serving/events.py: per-user write locks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pandas as pd
import pytest

from index.server import LiteServer
from mmrec import event_log
from mmrec.feast_store import open_store
from mmrec.settings import Settings
from serving.bento_process import BentoServer, build_bento, workspace_env

pytestmark = pytest.mark.slow
POSTS = 50  # = SEQ_LENGTH: the online click sequence can hold every one
USER = 11


@pytest.fixture(scope="module")
def two_workers(
    serving_world: Settings, serving_config, index_server: LiteServer, tmp_path_factory
) -> Iterator[str]:
    env = {
        **workspace_env(serving_world),
        "MMREC_RECALL_MODEL": serving_config.recall_model,
        "MMREC_RANK_MODEL": serving_config.rank_model,
        "MMREC_MILVUS_URI": index_server.uri,
        "MMREC_TORCH_THREADS": "1",
        "MMREC_SERVING_WORKERS": "2",
    }
    log_file = tmp_path_factory.mktemp("bento-workers") / "serve.log"
    with BentoServer(build_bento(env), env, log_file) as running:
        yield running.url


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """Every body at once, each on its own connection (so both workers take some). A 429
    (the service's admission limit, `max_concurrency` shared by the workers) acknowledged
    nothing: the body is posted again, with its event ids, as a client would."""

    async def post(body: dict) -> httpx.Response:
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(50):
                answer = await client.post(f"{url}/events", json=body)
                if answer.status_code != 429:
                    break
                await asyncio.sleep(0.2)
            return answer

    return await asyncio.gather(*(post(body) for body in bodies))


def test_concurrent_posts_for_one_user_on_two_workers_keep_every_event(
    two_workers: str, serving_world: Settings
) -> None:
    store = open_store(serving_world)

    def clicks() -> list[int]:
        rows = store.get_online_features(
            features=["user_behavior_seq:item_click_seq"], entity_rows=[{"user_id": USER}]
        )
        return list(rows.to_dict()["item_click_seq"][0] or [])

    catalog = pd.read_parquet(serving_world.raw_dir / "items.parquet", columns=["item_id"])
    items = [int(i) for i in catalog.item_id if int(i) not in set(clicks())][:POSTS]
    bodies = [
        {
            "events": [
                {"user_id": USER, "event_type": "click", "item_id": item, "event_id": f"w{item}"}
            ]
        }
        for item in items
    ]
    answers = asyncio.run(post_all(two_workers, bodies))
    assert [a.status_code for a in answers] == [200] * POSTS, [a.text for a in answers][:3]
    assert all(a.json()["appended"] == 1 for a in answers)

    assert sorted(clicks()) == sorted(items)  # each post's click, none lost to another's write
    logged = pd.concat(pd.read_parquet(path) for path in event_log.segments(serving_world))
    mine = logged[logged.event_id.str.fullmatch(r"w\d+")]
    assert sorted(mine.item_id) == sorted(items)
    writers = {path.name.split("-")[1] for path in event_log.segments(serving_world)}
    assert len(writers) == 2, f"one worker took every post: {writers}"
