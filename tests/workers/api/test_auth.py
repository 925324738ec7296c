"""Bearer tokens: several per scope, read from files that rotate without a restart, and
no open API in production where the network reaches it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from simstream.errors import ConfigError
from tests.waiting import wait_for
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.auth import Scope, TokenStore, ensure_protected, is_loopback, parse_tokens
from workers.api.config import AuthConfig

CHECK_S = 0.2


def auth_config(**overrides: object) -> AuthConfig:
    values: dict[str, object] = {
        "read_tokens": frozenset(),
        "admin_tokens": frozenset(),
        "read_tokens_file": None,
        "admin_tokens_file": None,
        "check_s": CHECK_S,
        "host": "0.0.0.0",
        "production": True,
    }
    values.update(overrides)
    return AuthConfig(**values)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token_files(tmp_path: Path) -> tuple[Path, Path]:
    read, admin = tmp_path / "read-tokens", tmp_path / "admin-tokens"
    read.write_text("# clients of the search page\nread-old\nread-new\n\n")
    admin.write_text("admin-1\n")
    return read, admin


@pytest.fixture
def secured(served: Served, token_files: tuple[Path, Path]) -> Iterator[TestClient]:
    """An app over the shared node whose tokens come from files re-read every CHECK_S."""
    read, admin = token_files
    settings = served.settings.model_copy(
        update={
            "api_read_tokens_file": read,
            "api_admin_tokens_file": admin,
            "api_tokens_check_s": CHECK_S,
        }
    )
    with TestClient(create_app(settings, served.node)) as client:
        yield client


@pytest.mark.services
def test_every_token_a_file_lists_is_valid_at_once_and_only_admin_ones_write(
    secured: TestClient,
) -> None:
    def stats(token: str) -> int:
        return secured.get("/v1/stats", headers=bearer(token)).status_code

    retrain = secured.post("/v1/admin/retrain", headers=bearer("read-new"))

    assert [stats(t) for t in ("read-old", "read-new", "admin-1")] == [200, 200, 200]
    assert stats("# clients of the search page") == 401
    assert stats("guess") == 401
    assert retrain.status_code == 403


@pytest.mark.services
def test_a_rewritten_token_file_refuses_the_old_token_and_accepts_the_new_without_a_restart(
    secured: TestClient, token_files: tuple[Path, Path]
) -> None:
    def stats(token: str) -> int:
        return secured.get("/v1/stats", headers=bearer(token)).status_code

    read, _ = token_files
    assert stats("read-old") == 200 and stats("read-rotated") == 401

    read.write_text("read-new\nread-rotated\n")
    rewritten = time.monotonic()
    wait_for(lambda: stats("read-rotated") == 200, timeout_s=CHECK_S + 2, message="new token")
    accepted_after_s = time.monotonic() - rewritten

    assert stats("read-old") == 401
    assert stats("read-new") == 200
    assert accepted_after_s < CHECK_S + 1.0


def test_inline_and_file_tokens_add_up_and_admin_tokens_read(
    token_files: tuple[Path, Path],
) -> None:
    read, admin = token_files
    store = TokenStore(auth_config(read_tokens=frozenset({"inline-read"}), admin_tokens_file=admin))

    assert store.enabled
    assert store.tokens(Scope.READ) == {"inline-read", "admin-1"}
    assert store.tokens(Scope.ADMIN) == {"admin-1"}
    assert parse_tokens(read.read_text()) == {"read-old", "read-new"}


def test_a_token_file_that_becomes_unreadable_keeps_its_last_tokens(
    token_files: tuple[Path, Path],
) -> None:
    read, _ = token_files
    store = TokenStore(auth_config(read_tokens_file=read))
    assert store.tokens(Scope.READ) == {"read-old", "read-new"}

    read.unlink()
    time.sleep(CHECK_S * 2)  # past the re-read interval: the next call reads the file again
    assert store.tokens(Scope.READ) == {"read-old", "read-new"}

    read.write_text("read-next\n")
    wait_for(
        lambda: store.tokens(Scope.READ) == {"read-next"},
        timeout_s=CHECK_S + 2,
        message="the file read again once it is back",
    )


def test_an_exposed_production_api_needs_a_token_and_loopback_or_development_do_not(
    token_files: tuple[Path, Path], tmp_path: Path
) -> None:
    read, _ = token_files
    empty = tmp_path / "empty"
    empty.write_text("")

    with pytest.raises(ConfigError, match=r"Received: none$"):
        ensure_protected(auth_config())
    with pytest.raises(ConfigError, match=r"the token files .* are empty"):
        ensure_protected(auth_config(read_tokens_file=empty))
    with pytest.raises(ConfigError, match="Cannot read SIMSTREAM_API_ADMIN_TOKENS_FILE"):
        ensure_protected(auth_config(admin_tokens_file=tmp_path / "missing"))
    ensure_protected(auth_config(read_tokens_file=read))
    ensure_protected(auth_config(admin_tokens=frozenset({"a"})))
    ensure_protected(auth_config(host="127.0.0.1"))
    ensure_protected(auth_config(production=False))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
    ],
)
def test_only_loopback_addresses_count_as_unreachable_from_the_network(
    host: str, loopback: bool
) -> None:
    assert is_loopback(host) is loopback
