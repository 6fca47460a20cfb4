"""Cross-origin requests (`ASR_CORS_ORIGINS`): which other web pages may call the API from a browser.

Off by default (the daemon's own page is same-origin). Keys travel in the `Authorization` header,
never in cookies, so credentialed requests are refused (`Access-Control-Allow-Credentials` is never
sent, which is also what makes `*` safe to allow); the headers a page needs to read (the job id,
Location, Content-Range, Retry-After) are exposed.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig

from asr_daemon.config import Settings

ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "Range"]
EXPOSE_HEADERS = [
    "X-Job-Id",
    "Location",
    "Retry-After",
    "Content-Range",
    "Accept-Ranges",
    "Content-Length",
    "X-Deduplicated",
    "Idempotent-Replayed",
    "WWW-Authenticate",
]


def origins(settings: Settings) -> list[str]:
    """The allowed origins, normalised (no trailing slash); empty when cross-origin calls are off."""
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def config(settings: Settings) -> CORSConfig | None:
    """Litestar's CORS configuration for `settings`, or None when no other origin is allowed."""
    allowed = origins(settings)
    if not allowed:
        return None
    return CORSConfig(
        allow_origins=allowed,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=ALLOW_HEADERS,
        allow_credentials=False,
        expose_headers=EXPOSE_HEADERS,
        max_age=600,
    )
