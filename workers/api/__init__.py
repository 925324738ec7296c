"""The lookup API (FastAPI) served by the index node process; see `create_app`."""

from workers.api.app import create_app

__all__ = ["create_app"]
