"""Bearer-token auth with two scopes: ``read`` and ``admin``.

Tokens come from settings, inline (``SIMSTREAM_API_READ_TOKENS``,
``SIMSTREAM_API_ADMIN_TOKENS``, comma-separated) or from files
(``SIMSTREAM_API_READ_TOKENS_FILE``, ``SIMSTREAM_API_ADMIN_TOKENS_FILE``: one token
per line, ``#`` comments and blank lines ignored), typically mounted secrets. An
admin token also reads.

Rotation without a restart: a scope accepts every token it lists, and its file is
re-read every ``SIMSTREAM_API_TOKENS_CHECK_S`` seconds (a few hundred bytes, so the
whole file is read rather than trusting its mtime, which can stay the same across
two quick writes). Add the new token beside the old one, move the clients over,
then remove the old one: within one check it is refused. A file that cannot be
read keeps its last tokens (``api.tokens_unreadable`` is logged); one that cannot
be read at start is a `ConfigError`.

With no token and no token file configured, auth is off and every route is open
(the embedded development default); `ensure_protected` refuses that in production
on an address the network reaches.

- ``read``: lookups, classification, reading items, stats and models.
- ``admin``: writing items (``POST``/``DELETE /v1/items``) and ``/v1/admin/*``.

Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) and the search
page's static files are never behind auth; the page asks for a token and sends
it with its API calls.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from simstream.errors import ConfigError
from simstream.log import get_logger
from workers.api.config import AuthConfig

log = get_logger("api")

READ_SETTINGS = "SIMSTREAM_API_READ_TOKENS or SIMSTREAM_API_READ_TOKENS_FILE"
ADMIN_SETTINGS = "SIMSTREAM_API_ADMIN_TOKENS or SIMSTREAM_API_ADMIN_TOKENS_FILE"

bearer = HTTPBearer(
    auto_error=False,
    description=f"A token from {READ_SETTINGS} (read) or {ADMIN_SETTINGS} (admin).",
)


class Scope(StrEnum):
    """What a token may do."""

    READ = "read"
    ADMIN = "admin"


def parse_tokens(text: str) -> frozenset[str]:
    """The tokens of a token file: one per line; blank lines and ``#`` comment lines ignored."""
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def read_token_file(path: Path, setting: str) -> frozenset[str]:
    """The tokens of the file ``setting`` names.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        return parse_tokens(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"Cannot read {setting}. Expected a readable UTF-8 file of bearer tokens, one per "
            f"line. Received: {path} ({type(e).__name__}: {e})"
        ) from None


class TokenFile:
    """The tokens of one file, re-read at most every ``check_s`` seconds.

    Args:
        path: the file.
        setting: the variable that names it (for messages and logs).
        check_s: seconds between re-reads.

    Raises:
        ConfigError: the file cannot be read now.
    """

    def __init__(self, path: Path, setting: str, check_s: float) -> None:
        self.path = path
        self.setting = setting
        self.check_s = check_s
        self._tokens = read_token_file(path, setting)
        self._next_read = time.monotonic() + check_s
        self._reading = threading.Lock()

    def tokens(self) -> frozenset[str]:
        """The tokens, re-read first when the last read is older than ``check_s``."""
        # One request re-reads; the others use the tokens at hand meanwhile.
        if time.monotonic() >= self._next_read and self._reading.acquire(blocking=False):
            try:
                self._reread()
            finally:
                self._reading.release()
        return self._tokens

    def _reread(self) -> None:
        self._next_read = time.monotonic() + self.check_s
        try:
            tokens = read_token_file(self.path, self.setting)
        except ConfigError as e:
            log.warning("api.tokens_unreadable", setting=self.setting, error=str(e))
            return
        if tokens != self._tokens:
            self._tokens = tokens
            log.info("api.tokens_reloaded", setting=self.setting, tokens=len(tokens))


class TokenStore:
    """The valid tokens of each scope: the inline ones and those of the token files.

    Args:
        config: the inline tokens, the token files and how often they are re-read.

    Raises:
        ConfigError: a token file cannot be read.
    """

    def __init__(self, config: AuthConfig) -> None:
        self.enabled = config.enabled
        self._inline = {
            Scope.READ: config.read_tokens | config.admin_tokens,
            Scope.ADMIN: config.admin_tokens,
        }
        files = {
            Scope.READ: (config.read_tokens_file, "SIMSTREAM_API_READ_TOKENS_FILE"),
            Scope.ADMIN: (config.admin_tokens_file, "SIMSTREAM_API_ADMIN_TOKENS_FILE"),
        }
        self._files = {
            scope: TokenFile(path, setting, config.check_s)
            for scope, (path, setting) in files.items()
            if path is not None
        }

    def _of(self, scope: Scope) -> frozenset[str]:
        file = self._files.get(scope)
        return self._inline[scope] | (file.tokens() if file else frozenset())

    def tokens(self, scope: Scope) -> frozenset[str]:
        """Every token valid for ``scope`` now (admin tokens are valid for read)."""
        admin = self._of(Scope.ADMIN)
        return admin if scope is Scope.ADMIN else self._of(Scope.READ) | admin

    def known(self, token: str) -> bool:
        """Whether ``token`` is valid now for any scope (False while auth is off)."""
        return self.enabled and _known(token, self.tokens(Scope.READ))


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_protected(config: AuthConfig) -> None:
    """Refuse an API that anyone on the network could write to; check the token files.

    Raises:
        ConfigError: a token file cannot be read, or the API would run in production
            on a non-loopback address without a single token.
    """
    store = TokenStore(config)
    if not config.production or is_loopback(config.host) or store.tokens(Scope.READ):
        return
    files = [str(f) for f in (config.read_tokens_file, config.admin_tokens_file) if f]
    received = f"no token (the token files {', '.join(files)} are empty)" if files else "none"
    raise ConfigError(
        f"Refusing to serve the API on {config.host} (not a loopback address) in production "
        f"without auth. Expected bearer tokens in SIMSTREAM_API_READ_TOKENS_FILE and "
        f"SIMSTREAM_API_ADMIN_TOKENS_FILE (files, e.g. mounted secrets) or "
        f"SIMSTREAM_API_READ_TOKENS and SIMSTREAM_API_ADMIN_TOKENS. Received: {received}"
    )


def _known(token: str, tokens: frozenset[str]) -> bool:
    # Compare against every token in constant time, so timing reveals nothing.
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, None]]:
    """A dependency that lets a request through only with a token of ``scope``.

    A coroutine, so checking a token never takes a thread of the request
    handlers' pool: a request answered on the event loop (a write token refused
    or waited for) is answered even while every handler thread is busy. Token
    files are re-read at most every ``check_s`` (a small local file).

    Raises (from the dependency):
        HTTPException: 401 without a valid token, 403 with a token lacking the scope.
    """

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        store: TokenStore = request.app.state.api.tokens
        if not store.enabled:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                401,
                "Missing credentials. Expected an 'Authorization: Bearer <token>' header. "
                "Received: none",
                headers=challenge,
            )
        if not _known(credentials.credentials, store.tokens(Scope.READ)):
            raise HTTPException(
                401,
                f"Invalid token. Expected a token from {READ_SETTINGS} or {ADMIN_SETTINGS}. "
                "Received: an unknown token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope is Scope.ADMIN and not _known(credentials.credentials, store.tokens(Scope.ADMIN)):
            raise HTTPException(
                403,
                "Forbidden. Expected a token with the admin scope. Received: a read token",
            )

    return check


def reads(store: TokenStore, authorization: str | None) -> bool:
    """Whether a request with this ``Authorization`` header may read: what
    `require` (``Scope.READ``) lets through, told without raising."""
    if not store.enabled:
        return True
    scheme, token = get_authorization_scheme_param(authorization)
    return (
        bool(authorization and scheme and token)
        and scheme.lower() == "bearer"
        and _known(token, store.tokens(Scope.READ))
    )


read_scope = Depends(require(Scope.READ))
admin_scope = Depends(require(Scope.ADMIN))
