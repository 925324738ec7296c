"""simstream: similarity search over streams of items.

This package holds what is cross-cutting: settings, logging, errors, the wire
contracts (``simstream.wire``), the CLI and the embedded local stack. The
product lives in ``model`` (metric learning), ``producers`` (publishing) and
``workers`` (everything that consumes).
"""

from __future__ import annotations

__version__ = "0.1.0"
