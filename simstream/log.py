"""Structured logging with structlog: JSON in production, readable console in development.

Call `configure_logging(settings)` once at process start (the CLI does). Library
code takes a logger with `get_logger(component)` and binds context with
``log.bind(item_id=..., partition=..., offset=..., task_id=..., model_version=...)``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

import structlog

if TYPE_CHECKING:
    from simstream.settings import Settings

_configured = False


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    """A logger on the standard error of the moment (not the one seen at import)."""
    return structlog.PrintLogger(sys.stderr)


if not structlog.is_configured():
    # Until `configure_logging` runs, structlog's default prints to standard output,
    # which would mix log lines into a command's JSON answer: send them to stderr.
    structlog.configure(logger_factory=_stderr_logger)


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging through one renderer.

    Args:
        settings: decides the level and whether lines are JSON or console text.
        stream: where lines go (standard error by default).
    """
    global _configured
    level = getattr(logging, settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if settings.json_logs:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "urllib3", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    _configured = True


def get_logger(component: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger bound to a component name and optional context."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component)
    return logger.bind(component=component, **context)
