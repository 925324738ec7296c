"""Bearer-token auth with two scopes: ``read`` and ``admin``.

Tokens come from settings (``SIMSTREAM_API_READ_TOKENS``, ``SIMSTREAM_API_ADMIN_TOKENS``,
comma-separated). An admin token also reads. With no token configured, auth is
off and every route is open (the embedded development default).

- ``read``: lookups, classification, reading items, stats and models.
- ``admin``: writing items (``POST``/``DELETE /v1/items``) and ``/v1/admin/*``.

Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) and the search
page's static files are never behind auth; the page asks for a token and sends
it with its API calls.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import StrEnum

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(
    auto_error=False,
    description="A token from SIMSTREAM_API_READ_TOKENS or SIMSTREAM_API_ADMIN_TOKENS.",
)


class Scope(StrEnum):
    """What a token may do."""

    READ = "read"
    ADMIN = "admin"


def _known(token: str, tokens: frozenset[str]) -> bool:
    # Compare against every token in constant time, so timing reveals nothing.
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def require(scope: Scope) -> Callable[..., None]:
    """A dependency that lets a request through only with a token of ``scope``.

    Raises (from the dependency):
        HTTPException: 401 without a valid token, 403 with a token lacking the scope.
    """

    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        settings = request.app.state.api.settings
        if not settings.auth_enabled:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                401,
                "Missing credentials. Expected an 'Authorization: Bearer <token>' header. "
                "Received: none",
                headers=challenge,
            )
        if not _known(credentials.credentials, settings.read_tokens):
            raise HTTPException(
                401,
                "Invalid token. Expected a token from SIMSTREAM_API_READ_TOKENS or "
                "SIMSTREAM_API_ADMIN_TOKENS. Received: an unknown token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope is Scope.ADMIN and not _known(credentials.credentials, settings.admin_tokens):
            raise HTTPException(
                403,
                "Forbidden. Expected a token with the admin scope. Received: a read token",
            )

    return check


read_scope = Depends(require(Scope.READ))
admin_scope = Depends(require(Scope.ADMIN))
