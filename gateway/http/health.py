"""The health answers, written once: the HTTP app and the WebSocket port's plain GETs both call
``probe`` (load balancers often probe the WebSocket port itself)."""

from __future__ import annotations

from ..build import health_line

HEALTH_PATHS = ("/healthz", "/readyz")


def probe(path: str, ready: bool) -> tuple[int, str] | None:
    """Status and body text for a health path, or None when ``path`` is not one.

    ``/healthz``: the process is alive (and which native twins it runs); ``/readyz``: it takes
    connections (503 before it listens and while it drains for shutdown)."""
    if path == "/healthz":
        return 200, health_line()
    if path == "/readyz":
        return (200, "ready") if ready else (503, "not ready")
    return None
