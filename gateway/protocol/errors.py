"""Error codes and close codes of protocol kefu.v1 — the one list that docs/protocol.md documents.

An error frame answers one request (or none, for a frame that could not be read as a request) and
leaves the connection open. A close code ends the connection. Codes are stable strings/integers:
clients switch on them, so never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    retryable: bool
    meaning: str


# The error codes of error frames: {"t": "error", "id": <request id or nil>, "code", "message", "retryable"}.
ERRORS: dict[str, ErrorCode] = {
    e.code: e
    for e in (
        ErrorCode("bad_frame", False, "The frame is not one msgpack map (undecodable, trailing bytes, or not a map)."),
        ErrorCode("bad_request", False, "A field is missing, has the wrong type or an invalid value; the message names it."),
        ErrorCode("unknown_type", False, "The request type `t` is not one of this protocol version."),
        ErrorCode("unauthenticated", False, "A request other than `auth` before authentication."),
        ErrorCode("already_authenticated", False, "`auth` on a connection that is already authenticated."),
        ErrorCode("forbidden", False, "Your role may not do this, or you are not a participant of the conversation."),
        ErrorCode("not_found", False, "No such conversation in your tenant (other tenants' ids are never revealed)."),
        ErrorCode("conflict", False, "What you create exists already (REST API: an agent with that user id)."),
        ErrorCode("conversation_closed", False, "The conversation is closed: no new messages or participants."),
        ErrorCode("too_large", False, "A field is longer than the limit announced in hello."),
        ErrorCode("cursor_ahead", False, "A resume cursor is past the conversation's last seq (`last_seq` in the reply): those messages were never stored; drop what you hold after `last_seq` and resume from it."),
        ErrorCode("rate_limited", True, "Over the per-connection message rate; retry after `retry_after_ms`."),
        ErrorCode("unavailable", True, "The server cannot take the request now (store overloaded or shutting down)."),
        ErrorCode("storage_damaged", False, "The server's store is damaged: an operator must repair it; retrying will not help."),
        ErrorCode("internal", True, "An unexpected server error; the request may be retried with the same cmid."),
    )
}

# Authentication failures: sent as an error frame, then the connection closes with CLOSE_AUTH_FAILED.
AUTH_ERRORS: dict[str, ErrorCode] = {
    e.code: e
    for e in (
        ErrorCode("token_missing", False, "No token at the handshake and no `auth` frame in time."),
        ErrorCode("token_invalid", False, "The token is malformed, its signature is wrong, or a claim is missing or invalid."),
        ErrorCode("token_expired", False, "The token's `exp` has passed: fetch a new token and reconnect."),
        ErrorCode("token_algorithm", False, "The token is not signed with HS256 (`none` and other algorithms are refused)."),
        ErrorCode("tenant_unknown", False, "The token's tenant is not served by this gateway."),
    )
}


# WebSocket close codes the server uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # idle timeout: no pong/data within the idle timeout
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008  # a flood over the rate limit, too many fragments, too much input before auth, a frame too slow
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012  # server restart / shutdown: reconnect with backoff and resume
CLOSE_TRY_AGAIN_LATER = 1013  # too many connections are authenticating at once: reconnect with backoff
CLOSE_AUTH_FAILED = 4001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOO_MANY_CONNECTIONS = 4009

CLOSE_CODES: dict[int, tuple[str, bool]] = {
    # code: (meaning, whether a client should reconnect)
    CLOSE_NORMAL: ("Normal closure.", False),
    CLOSE_GOING_AWAY: ("Idle timeout: nothing received within the idle timeout.", True),
    CLOSE_PROTOCOL_ERROR: ("WebSocket protocol error (unmasked frame, bad opcode, bad fragmentation…).", False),
    CLOSE_INVALID_DATA: ("Invalid UTF-8 in a text frame or close reason.", False),
    CLOSE_POLICY_VIOLATION: (
        "Policy violation: a flood over the rate limit, a message in too many fragments, too much input before "
        "authenticating, too many requests before authenticating, or a frame not completed within the frame timeout.",
        False,
    ),
    CLOSE_MESSAGE_TOO_BIG: ("A frame or message over the frame size limit.", False),
    CLOSE_INTERNAL_ERROR: ("Unexpected server error.", True),
    CLOSE_SERVICE_RESTART: ("Server restart or shutdown: reconnect with backoff and resume.", True),
    CLOSE_TRY_AGAIN_LATER: ("Server busy: too many connections are authenticating at once; reconnect with backoff.", True),
    CLOSE_AUTH_FAILED: ("Authentication failed; the preceding error frame says why.", False),
    CLOSE_SLOW_CONSUMER: ("Slow consumer: the outbox passed its bound; reconnect and resume.", True),
    CLOSE_TOO_MANY_CONNECTIONS: ("Too many connections for this user.", False),
}


class RequestError(Exception):
    """A request that cannot be served: becomes an error frame; the connection stays open."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        assert code in ERRORS, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def retryable(self) -> bool:
        return ERRORS[self.code].retryable


class AuthError(Exception):
    """Authentication failed: an error frame with ``code``, then close with CLOSE_AUTH_FAILED."""

    def __init__(self, code: str, message: str) -> None:
        assert code in AUTH_ERRORS, code
        super().__init__(message)
        self.code = code
        self.message = message
