"""The health answers, written once: the HTTP app and the WebSocket port's plain GETs both call
``probe`` (load balancers often probe the WebSocket port itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..build import health_line

HEALTH_PATHS = ("/healthz", "/readyz")


@dataclass(frozen=True)
class Check:
    """One dependency's health as last seen (a shared store or bus): ``/readyz`` lists it."""

    name: str  # "store" or "bus"
    ok: bool
    detail: str = ""


def probe(path: str, ready: bool, checks: Sequence[Check] = ()) -> tuple[int, str] | None:
    """Status and body text for a health path, or None when ``path`` is not one.

    ``/healthz``: the process is alive (and which native twins it runs); ``/readyz``: it takes
    connections (503 before it listens and while it drains for shutdown) and the store and bus it
    shares with other processes answer (503 while one does not; one line each says which)."""
    if path == "/healthz":
        return 200, health_line()
    if path == "/readyz":
        ready = ready and all(check.ok for check in checks)
        lines = ["ready" if ready else "not ready"]
        lines += [f"{c.name}: {'ok' if c.ok else 'down'}{' - ' + c.detail if c.detail else ''}" for c in checks]
        return (200 if ready else 503), "\n".join(lines)
    return None
