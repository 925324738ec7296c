"""The query router: a stateless process that answers lookups for the whole cluster.

See `create_router_app` and "Query router" in docs/architecture.md.
"""

from workers.router.app import create_router_app

__all__ = ["create_router_app"]
