"""The search page: ``GET /`` (plain HTML) and its script and style under ``/static``.

No build step: ``static/`` holds the files as served. The page uploads an
image (or picks a random indexed item), shows the neighbours with their
labels, distances and images (read back from the items topic by
``GET /v1/items/{id}/image``; an item without an image payload shows none),
and refreshes the node's statistics every few seconds.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    """The search page."""
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


def static_files() -> StaticFiles:
    """The page's script and style (mount at ``/static``)."""
    return StaticFiles(directory=STATIC_DIR)
