"""Serving the page: `/` (index.html) and `/static/<file>`, from the package, with a strict CSP.

Files are read once when the router is built (they are small: the whole page stays under 200 KB)
and answered from memory with a content hash as ETag. No inline script or style is allowed by the
policy, and nothing the page shows is ever parsed as HTML (the scripts build DOM text nodes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException

STATIC = Path(__file__).resolve().parent / "static"

CSP_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
)
CSP = "; ".join(CSP_DIRECTIVES)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}
TYPES = {
    ".html": "text/html",  # Litestar adds "; charset=utf-8" to every text/ type
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page."""

    body: bytes
    media_type: str
    etag: str


def load(root: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under `root`, by its path relative to it (`js/main.js`)."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        kind = TYPES.get(path.suffix)
        if kind is None or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.relative_to(root).as_posix()] = Asset(body, kind, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


def _answer(request: Request[Any, Any, Any], asset: Asset, cache: str) -> Response[bytes]:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def router() -> Router:
    """The page's routes (left out of the OpenAPI schema: they are not API)."""
    assets = load()

    @get("/", include_in_schema=False, sync_to_thread=False)
    def index(request: Request[Any, Any, Any]) -> Response[bytes]:
        return _answer(request, assets["index.html"], "no-cache")

    @get("/static/{name:path}", include_in_schema=False, sync_to_thread=False)
    def static(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
        asset = assets.get(name.lstrip("/"))
        if asset is None or name.lstrip("/") == "index.html":
            raise NotFoundException(f"no file {name[:100]}")
        return _answer(request, asset, "no-cache")

    return Router(path="/", route_handlers=[index, static])
