"""Field checks of kefu.v1 requests, each naming the field in its error, and the client's limits.

Shared by both envelope twins (:mod:`gateway.protocol._envelope_py` and ``native/envelope.pyx``,
which repeats the checks of the send path in C with the same messages) and by every request
handler of the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RequestError

ID_CHARS = 128  # longest conversation id, client message id or request id (in characters)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client may send; announced in hello so clients can check before sending."""

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 5000
    max_id_chars: int = ID_CHARS
    max_meta_bytes: int = 4096
    rate_per_second: float = 50.0
    rate_burst: int = 100
    history_page: int = 200

    def as_map(self) -> dict[str, Any]:
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_text_chars": self.max_text_chars,
            "max_id_chars": self.max_id_chars,
            "rate_per_second": self.rate_per_second,
            "rate_burst": self.rate_burst,
            "history_page": self.history_page,
        }


def request_id(req: dict[str, Any]) -> int | str | None:
    """The client's request id, when it is a usable one (int or short str)."""
    rid = req.get("id")
    if type(rid) is int or (type(rid) is str and len(rid) <= ID_CHARS):
        return rid
    return None


def need_str(req: dict[str, Any], key: str, limit: int, *, optional: bool = False, empty: bool = False) -> str | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not str:
        raise RequestError("bad_request", f"field `{key}` must be a string")
    if not v and not empty:
        raise RequestError("bad_request", f"field `{key}` must not be empty")
    if len(v) > limit:
        raise RequestError("too_large", f"field `{key}` is longer than {limit} characters")
    return v


MAX_INT = (1 << 63) - 1  # what the stores hold (SQLite INTEGER, PostgreSQL bigint)


def need_int(req: dict[str, Any], key: str, *, optional: bool = False, minimum: int = 0) -> int | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not int:
        raise RequestError("bad_request", f"field `{key}` must be an integer")
    if v < minimum:
        raise RequestError("bad_request", f"field `{key}` must be >= {minimum}")
    if v > MAX_INT:
        raise RequestError("bad_request", f"field `{key}` must be < 2**63")
    return v


def need_optional_bool(req: dict[str, Any], key: str) -> bool:
    """A flag that may be left out (false)."""
    v = req.get(key)
    if v is None:
        return False
    if type(v) is not bool:
        raise RequestError("bad_request", f"field `{key}` must be a boolean")
    return v


def need_bool(req: dict[str, Any], key: str) -> bool:
    v = req.get(key)
    if type(v) is not bool:
        raise RequestError("bad_request", f"field `{key}` must be a boolean")
    return v


def need_map(req: dict[str, Any], key: str, *, optional: bool = False) -> dict[str, Any] | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not dict:
        raise RequestError("bad_request", f"field `{key}` must be a map")
    return v


def need_choice(req: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    v = req.get(key)
    if v not in choices or type(v) is not str:
        raise RequestError("bad_request", f"field `{key}` must be one of {', '.join(choices)}")
    return v
