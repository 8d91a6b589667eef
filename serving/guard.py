"""The service's front door (issue #20): an ASGI middleware that runs before BentoML parses a
request.

- A bearer token on writes: when MMREC_API_TOKEN is set, `/events` (and every route in
  `WRITE_ROUTES`) needs `Authorization: Bearer <token>`, compared in constant time; reads stay
  open unless MMREC_API_TOKEN_READS=1 (the probes `/livez`, `/readyz`, `/healthz` always do:
  they carry no data). 401 otherwise, naming the header and the setting.
- A body limit: a Content-Length over MMREC_MAX_BODY_BYTES is refused at once, a chunked body
  as soon as the bytes received pass it (413); nothing over the limit is buffered or parsed.
- A body deadline: the whole body must arrive within MMREC_BODY_TIMEOUT_S (408), so a client
  that trickles bytes holds one coroutine (and one of the service's `max_concurrency` slots)
  for that long at most, never a worker thread: the API method runs only on a whole body.

Registered on the service with `Recommender.add_asgi_middleware(RequestGuard, guard=...)`;
BentoML places it inside its own timeout and admission middlewares.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from mmrec.settings import DEFAULT_MAX_BODY_BYTES, Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes that change state; an admin or reload endpoint joins this set when it is added.
WRITE_ROUTES = frozenset({"/events"})
# Liveness and readiness probes: open even when reads need the token (they carry no data).
PROBES = frozenset({"/livez", "/readyz", "/healthz"})


@dataclass(frozen=True)
class GuardConfig:
    """What the guard enforces (from `Settings`: MMREC_API_TOKEN[_FILE], MMREC_API_TOKEN_READS,
    MMREC_MAX_BODY_BYTES, MMREC_BODY_TIMEOUT_S)."""

    token: str = field(default="", repr=False)  # "": no route needs a token
    protect_reads: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 10.0
    write_routes: frozenset[str] = WRITE_ROUTES

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardConfig:
        return cls(
            token=settings.api_token,
            protect_reads=settings.api_token_reads,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
        )

    def needs_token(self, path: str) -> bool:
        if not self.token:
            return False
        return path in self.write_routes or (self.protect_reads and path not in PROBES)


def token_problem(authorization: bytes | None, token: str) -> str | None:
    """Why the Authorization header does not carry `token` as a bearer token; None when it
    does. The comparison is constant-time (hmac.compare_digest); no message echoes a value."""
    if not authorization:
        return "no Authorization header"
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return "the Authorization header is not 'Bearer <token>'"
    if not hmac.compare_digest(credentials.strip(), token.encode()):
        return "the bearer token is not the service's"
    return None


class BodyRejected(Exception):
    """The request body broke a limit; `status` and `message` are the answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class RequestGuard:
    """ASGI middleware: token check, then the whole body read within the limits and handed
    to the app as one message (module docstring)."""

    def __init__(self, app: ASGIApp, guard: GuardConfig) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.guard.needs_token(scope["path"]):
            problem = token_problem(headers.get(b"authorization"), self.guard.token)
            if problem is not None:
                message = (
                    f"{scope['method']} {scope['path']} needs the API token: {problem}. Send "
                    "'Authorization: Bearer <token>' with the token the service was started "
                    "with (MMREC_API_TOKEN or MMREC_API_TOKEN_FILE)"
                )
                await _answer(scope, receive, send, HTTPStatus.UNAUTHORIZED, message)
                return
        try:
            self._check_length(headers.get(b"content-length"))
            async with asyncio.timeout(self.guard.body_timeout_s):
                body, first = await self._read_body(receive)
        except BodyRejected as rejected:
            await _answer(scope, receive, send, rejected.status, rejected.message)
            return
        except TimeoutError:
            message = (
                f"the request body did not arrive within {self.guard.body_timeout_s:g} s "
                "(MMREC_BODY_TIMEOUT_S): send the whole body at once"
            )
            await _answer(scope, receive, send, HTTPStatus.REQUEST_TIMEOUT, message)
            return
        await self.app(scope, _replay(body, first, receive), send)

    def _check_length(self, content_length: bytes | None) -> None:
        if content_length is not None and content_length.isdigit():
            self._check_size(int(content_length))

    def _check_size(self, size: int) -> None:
        if size > self.guard.max_body_bytes:
            raise BodyRejected(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request body is over {self.guard.max_body_bytes} bytes "
                "(MMREC_MAX_BODY_BYTES): send fewer events a request (at most 1,000), or "
                "raise the limit",
            )

    async def _read_body(self, receive: Receive) -> tuple[bytes, Message | None]:
        """The whole body, and the first non-body message (a disconnect) if one came."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), message
            chunk = message.get("body", b"")
            size += len(chunk)
            self._check_size(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, first: Message | None, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read already, then defers to the server's."""
    pending: list[Message] = [first or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _answer(
    scope: Scope, receive: Receive, send: Send, status: HTTPStatus, message: str
) -> None:
    headers = {"www-authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else None
    response = JSONResponse({"error": message}, status_code=status, headers=headers)
    await response(scope, receive, send)
