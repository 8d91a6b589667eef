"""The service's front door over real HTTP (issue #20; serving/guard.py): the bento served with
an API token and planted secrets. Writes need the bearer token (401 without it, 200 with it),
reads stay open; a body over the limit gets 413 before anything parses it (sized or chunked);
a client that trickles its body is cut off (408) while other requests are answered; and the
planted secrets appear in no log, schema, metrics or answer, nor in a failing CLI run."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from index.server import LiteServer
from mmrec.settings import DEFAULT_MAX_BODY_BYTES, Settings
from serving.bento_process import BentoServer, build_bento, pinned_requirements, workspace_env

pytestmark = pytest.mark.slow
API_TOKEN = "tok-PLANTED-5f2a9c41"
REDIS_PASSWORD = "redis-PLANTED-77d0e3"
MILVUS_TOKEN = "root:milvus-PLANTED-c9b1"
SECRETS = (API_TOKEN, REDIS_PASSWORD, MILVUS_TOKEN)
BODY_TIMEOUT_S = 2.0
EVENT = {"events": [{"user_id": 5, "event_type": "click", "item_id": 11}]}


@dataclass
class Served:
    url: str
    log: Path
    bento: Path  # the built bento's folder


@pytest.fixture(scope="module")
def served(
    serving_world: Settings, serving_config, index_server: LiteServer, tmp_path_factory
) -> Iterator[Served]:
    """The bento with MMREC_API_TOKEN (from a file), a Redis URL and a Milvus token that carry
    planted secrets, and a short body deadline."""
    folder = tmp_path_factory.mktemp("bento-security")
    token_file = folder / "api-token"
    token_file.write_text(API_TOKEN + "\n")
    env = {
        **workspace_env(serving_world),
        "MMREC_RECALL_MODEL": serving_config.recall_model,
        "MMREC_RANK_MODEL": serving_config.rank_model,
        "MMREC_MILVUS_URI": index_server.uri,
        "MMREC_TORCH_THREADS": "1",
        "MMREC_API_TOKEN_FILE": str(token_file),
        "MMREC_REDIS_URL": f"127.0.0.1:1,password={REDIS_PASSWORD}",
        "MMREC_MILVUS_TOKEN": MILVUS_TOKEN,
        "MMREC_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    log_file = folder / "serve.log"
    tag = build_bento(env)
    bento = serving_world.model_store_dir / "bentos" / Path(*tag.split(":"))
    with BentoServer(tag, env, log_file) as running:
        yield Served(running.url, log_file, bento)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "no Authorization header"),
        (bearer("not-the-token"), "bearer token is not the service's"),
        ({"Authorization": API_TOKEN}, "not 'Bearer <token>'"),
        ({"Authorization": f"Basic {API_TOKEN}"}, "not 'Bearer <token>'"),
    ],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_events_without_the_token_get_401(served: Served, headers: dict, words: str) -> None:
    resp = httpx.post(f"{served.url}/events", json=EVENT, headers=headers, timeout=30)
    assert resp.status_code == 401, resp.text
    assert words in resp.json()["error"] and "MMREC_API_TOKEN" in resp.json()["error"]
    assert resp.headers["www-authenticate"] == "Bearer"


def test_events_with_the_token_get_200_and_reads_stay_open(served: Served) -> None:
    resp = httpx.post(f"{served.url}/events", json=EVENT, headers=bearer(API_TOKEN), timeout=30)
    assert resp.status_code == 200 and resp.json()["appended"] == 1, resp.text
    resp = httpx.post(f"{served.url}/recommend", json={"user_id": 5, "scene": "home"}, timeout=30)
    assert resp.status_code == 200, resp.text
    for probe in ("/readyz", "/livez"):
        assert httpx.get(f"{served.url}{probe}", timeout=10).status_code == 200


def test_a_body_over_the_limit_gets_413_sized_or_chunked(served: Served) -> None:
    padding = " " * (DEFAULT_MAX_BODY_BYTES + 1)
    body = f'{{"user_id": 1, "scene": "home"{padding}}}'.encode()
    resp = httpx.post(
        f"{served.url}/recommend",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 413 and "MMREC_MAX_BODY_BYTES" in resp.text, resp.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts what arrives
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    resp = httpx.post(
        f"{served.url}/events",
        content=chunks(),
        headers={"content-type": "application/json", **bearer(API_TOKEN)},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    small = httpx.post(
        f"{served.url}/recommend",
        content=(part for part in [b'{"user_id": 1,', b' "scene": "home"}']),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert small.status_code == 200, small.text  # a chunked body within the limit is served


@dataclass
class SlowPost:
    status_line: str
    seconds: float  # from the headers sent to the answer's first line
    bytes_sent: int


def post_slowly(url: str, path: str, body: bytes, bytes_per_s: float, give_up_s: float) -> SlowPost:
    """POST `body` over a raw socket a few bytes at a time (`bytes_per_s`), reading the answer
    as soon as one comes; stop sending when it does."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=give_up_s) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode())
        start, sent, answer = time.monotonic(), 0, b""
        sock.setblocking(False)
        while b"\r\n" not in answer and time.monotonic() - start < give_up_s:
            if sent < len(body):
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(body[sent : sent + 2])
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(4096)
            time.sleep(2 / bytes_per_s)
        return SlowPost(answer.split(b"\r\n")[0].decode(), time.monotonic() - start, sent)


def test_a_slow_body_is_cut_off_while_other_requests_are_answered(served: Served) -> None:
    """A client sends a 300-byte /recommend body at 4 bytes a second (75 s to finish). The
    guard's deadline (MMREC_BODY_TIMEOUT_S, here 2 s) answers it 408; meanwhile requests on
    other connections keep being answered at their usual latency."""
    body = b'{"user_id": 3, "scene": "home"' + b" " * 269 + b"}"
    slow: list[SlowPost] = []
    sender = threading.Thread(
        target=lambda: slow.append(post_slowly(served.url, "/recommend", body, 4, 60))
    )
    sender.start()
    answered = []
    while sender.is_alive():
        start = time.monotonic()
        resp = httpx.post(f"{served.url}/recommend", json={"user_id": 3, "scene": "home"})
        answered.append((resp.status_code, time.monotonic() - start))
        time.sleep(0.2)
    sender.join()
    (cut,) = slow
    latencies = sorted(seconds for _, seconds in answered)
    print(
        f"\nslow body: {cut.status_line!r} after {cut.seconds:.2f} s ({cut.bytes_sent} of "
        f"{len(body)} bytes sent); meanwhile {len(answered)} other requests, statuses "
        f"{sorted({code for code, _ in answered})}, latency max {latencies[-1] * 1000:.0f} ms, "
        f"median {latencies[len(latencies) // 2] * 1000:.0f} ms"
    )
    assert cut.status_line.startswith("HTTP/1.1 408"), cut
    assert BODY_TIMEOUT_S <= cut.seconds < BODY_TIMEOUT_S + 10 and cut.bytes_sent < len(body)
    assert answered and all(code == 200 for code, _ in answered), answered


def test_planted_secrets_appear_in_no_log_schema_metrics_or_answer(served: Served) -> None:
    answers = [
        httpx.post(f"{served.url}/events", json=EVENT, headers=bearer("wrong"), timeout=30),
        httpx.post(f"{served.url}/events", json={"events": "x"}, headers=bearer(API_TOKEN)),
        httpx.post(f"{served.url}/recommend", json={"user_id": -1, "scene": "home"}),
        httpx.get(f"{served.url}/docs.json", timeout=30),
        httpx.get(f"{served.url}/metrics", timeout=30),
    ]
    assert [a.status_code for a in answers] == [401, 400, 400, 200, 200]
    assert "/events" in answers[3].json()["paths"] and "bentoml" in answers[4].text.lower()
    time.sleep(1)  # the access log of the last requests reaches the file
    log = served.log.read_text()
    assert "/events" in log and "status=401" in log, log[-2000:]
    for secret in SECRETS:
        assert secret not in log, f"a planted secret is in the serve log: {secret}"
        for answer in answers:
            assert secret not in answer.text, (answer.url, secret)


def test_the_bento_records_the_pinned_versions(served: Served) -> None:
    shipped = (served.bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert set(pinned_requirements()) <= set(shipped)


def test_a_failing_cli_run_shows_no_planted_secret(serving_world: Settings) -> None:
    """`mmrec features show` against a Redis that is not there (the URL carries a password):
    it fails, and neither its error nor its debug log prints the password."""
    env = {
        **os.environ,
        "MMREC_REDIS_URL": f"127.0.0.1:1,password={REDIS_PASSWORD}",
        "MMREC_API_TOKEN": API_TOKEN,
    }
    mmrec = str(Path(sys.executable).with_name("mmrec"))
    show = ["features", "show", "--user-id", "3", "--item-id", "5", "--online-store", "redis"]
    run = subprocess.run(
        [mmrec, "-v", *show, "-w", str(serving_world.workspace)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "connect" in output.lower(), output[-3000:]
    for secret in SECRETS:
        assert secret not in output, output[-3000:]
