"""Refusals as JSON problem details (RFC 9457) that carry the protocol's error codes.

A handler raises ``Problem``; the application turns it into ``application/problem+json`` with the
HTTP status, counts it (``kefu_http_refusals_total{code,status}``) and logs it. The ``code`` member
is one of ``gateway.protocol.errors.ERRORS``, so a client handles REST and WebSocket refusals alike.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from starlette.responses import Response

from ..protocol.errors import ERRORS, RequestError

log = logging.getLogger("kefu.http")

MEDIA_TYPE = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
#: The status a protocol error code gets when a handler does not choose one.
STATUS_OF = {
    "bad_request": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "conversation_closed": 409,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "storage_damaged": 503,
    "internal": 500,
}


class Problem(Exception):
    """A refused request: ``code`` from the protocol's error codes, ``detail`` for people."""

    def __init__(
        self, code: str, detail: str, *, status: int | None = None, errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        assert code in ERRORS, code
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or STATUS_OF.get(code, 400)
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    @classmethod
    def of(cls, exc: RequestError) -> Problem:
        """The REST form of a refusal the conversation service (or routing) raised."""
        return cls(exc.code, exc.message)

    def body(self, instance: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:kefu:error:{self.code}",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "code": self.code,
            "retryable": ERRORS[self.code].retryable,
        }
        if self.errors:
            doc["errors"] = self.errors
        return doc | self.extra


class RefusalLog:
    """Logs refusals, at most ``per_second`` lines a second: a client hammering the API with bad
    keys must not flood the log. What is left out is counted and said in the next line logged
    (the metric counts every refusal regardless)."""

    def __init__(self, per_second: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_second
        self._clock = clock
        self._tokens = per_second
        self._last = clock()
        self.suppressed = 0

    def log(self, problem: Problem, method: str, path: str) -> None:
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        level = logging.ERROR if problem.status >= 500 else logging.INFO
        more = f" ({self.suppressed} more refusals not logged)" if self.suppressed else ""
        self.suppressed = 0
        log.log(level, "%s %s refused: %d %s: %s%s", method, path[:200], problem.status, problem.code, problem.detail[:500], more)


def respond(problem: Problem, method: str, path: str, refusals: Any, refusal_log: RefusalLog) -> Response:
    """The response for ``problem``; counted in ``refusals`` (a Counter by (code, status)) and
    logged in ``refusal_log``."""
    refusals[(problem.code, problem.status)] += 1
    refusal_log.log(problem, method, path)
    body = json.dumps(problem.body(path), ensure_ascii=False).encode()
    return Response(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)
