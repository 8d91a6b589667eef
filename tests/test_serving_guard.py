"""serving/guard.py without a server: which routes need the token, and the bearer check
(the served behaviour is tests/test_serving_security.py)."""

from __future__ import annotations

import pytest

from serving.guard import GuardConfig, token_problem


@pytest.mark.parametrize(
    ("guard", "path", "needs"),
    [
        (GuardConfig(), "/events", False),  # no token configured: nothing to check
        (GuardConfig(token="t"), "/events", True),
        (GuardConfig(token="t"), "/recommend", False),
        (GuardConfig(token="t"), "/docs.json", False),
        (GuardConfig(token="t", protect_reads=True), "/recommend", True),
        (GuardConfig(token="t", protect_reads=True), "/metrics", True),
        (GuardConfig(token="t", protect_reads=True), "/readyz", False),
        (GuardConfig(token="t", protect_reads=True), "/livez", False),
    ],
)
def test_which_routes_need_the_token(guard: GuardConfig, path: str, needs: bool) -> None:
    assert guard.needs_token(path) is needs


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "no Authorization header"),
        (b"Bearer", "not 'Bearer <token>'"),
        (b"bearer s3cret", None),  # the scheme is case-insensitive
        (b"Bearer s3cret ", None),
        (b"Bearer s3cre", "not the service's"),
        (b"Bearer s3cret-and-more", "not the service's"),
    ],
)
def test_the_bearer_token_check(header: bytes | None, problem: str | None) -> None:
    found = token_problem(header, "s3cret")
    assert found == problem if problem is None else problem in (found or "")
    assert "s3cret" not in (found or "")
