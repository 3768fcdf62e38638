"""``/v1/.../attachments``: upload a file into a conversation, see it, fetch it.

Not REST operations of ``operations.py``: an upload's body is the file itself, streamed (never a
JSON document held in memory), and both a shopper's or agent's client token and a tenant's API
key may call these, so they authenticate here. Every rule lives in gateway.media.service.

- ``POST /v1/conversations/{conv_id}/attachments?kind=image&name=photo.jpg``: the body is the
  file (its Content-Type is ignored: the bytes decide). 201 with the attachment.
- ``GET /v1/attachments/{id}``: the attachment with fresh signed URLs.
- ``GET /v1/attachments/{id}/content``: its bytes (``variant=original|display|thumbnail``), by token or
  API key, or with a signed URL's ``variant``, ``expires`` and ``sig`` and no credentials at all.
  Range requests are served (206/416), so a ``<video>`` seeks.
- ``DELETE /v1/attachments/{id}``: its uploader, a supervisor of the tenant, or the tenant's
  backend deletes it (204); from then on it answers ``410 attachment_deleted``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ...media.downloads import unsatisfiable_headers
from ...media.errors import MEDIA_ERRORS, MediaError
from ...media.kinds import UPLOAD_KINDS
from ...media.service import Media
from ...media.signing import VARIANTS
from ...protocol.errors import ERRORS, AuthError
from .. import keys
from ..problems import MEDIA_TYPE, TITLES, Problem, respond

UPLOAD_SCOPES = frozenset({"ingest", "bot"})
READ_SCOPES = frozenset({"read", "bot", "ingest"})
DELETE_SCOPES = UPLOAD_SCOPES  # the keys that upload may take back: the tenant's backend


@dataclass(frozen=True)
class Caller:
    tenant: str
    user: str
    role: str
    tenant_wide: bool  # an API key: it acts for the whole tenant


async def caller(request: Request, services: Any, scopes: frozenset[str]) -> Caller:
    """Who calls: a client token's holder, or an API key with one of ``scopes``; raises Problem."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    challenge = {"www-authenticate": 'Bearer realm="kefu"'}
    if scheme.lower() != "bearer" or not presented:
        raise Problem("unauthenticated", "send a client token or an API key as `Authorization: Bearer …`", headers=challenge)
    parsed = keys.parse(presented)
    if parsed is not None:
        record = await services.store.api_key(parsed[0])
        if not keys.matches(record, parsed[1]):
            raise Problem("unauthenticated", "unknown or revoked API key", headers=challenge)
        assert record is not None
        wait_ms = services.rates.admit(record.id)  # the same per-key rate as every REST call
        if wait_ms is not None:
            raise Problem("rate_limited", f"over this API key's rate: retry in {wait_ms} ms",
                          headers={"retry-after": str(-(-wait_ms // 1000))}, extra={"retry_after_ms": wait_ms})
        if not keys.allows(record, scopes):
            raise Problem("forbidden", f"this API key lacks a scope for this call (one of: admin, {', '.join(sorted(scopes))})")
        return Caller(record.tenant, f"apikey:{record.id}", "system", True)
    try:
        identity = services.auth.verify(presented)
    except AuthError as exc:
        raise Problem("unauthenticated", f"{exc.code}: {exc.message}", headers=challenge) from None
    return Caller(identity.tenant, identity.user, identity.role, False)


def media_problem(exc: MediaError, request: Request, services: Any, headers: dict[str, str] | None = None) -> Response:
    """A refusal of the media API: problem details of the same shape as every other (the
    ``code`` is one of gateway.media.errors.MEDIA_ERRORS, documented in docs/media.md)."""
    services.stats.http_refusals[(exc.code, exc.status)] += 1
    services.refusal_log.log(exc, request.method, request.url.path)
    doc = {
        "type": f"urn:kefu:error:{exc.code}",
        "title": TITLES.get(exc.status, "Error"),
        "status": exc.status,
        "detail": exc.message,
        "instance": request.url.path,
        "code": exc.code,
        "retryable": exc.code in ("busy", "storage_failed"),
    }
    return Response(json.dumps(doc, ensure_ascii=False).encode(), status_code=exc.status, media_type=MEDIA_TYPE, headers=headers)


def _media(services: Any) -> Media:
    return services.node.media


def _content_path(attachment_id: str) -> str:
    return f"/v1/attachments/{attachment_id}/content"


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise MediaError("incomplete_upload", "the client went away before the body ended") from None


def routes(services: Any) -> list[Route]:
    async def upload(request: Request) -> Response:
        media = _media(services)
        try:
            who = await caller(request, services, UPLOAD_SCOPES)
            kind = request.query_params.get("kind", "")
            if kind not in UPLOAD_KINDS:
                raise MediaError("unknown_kind", f"query parameter `kind` must be one of {', '.join(UPLOAD_KINDS)}")
            declared = request.headers.get("content-length")
            limit = media.limits.rule(kind).max_bytes
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise MediaError("file_too_large", f"{kind} uploads may be at most {limit} bytes")  # refused unread
            attachment = await media.upload(
                who.tenant, who.user, who.role, request.path_params["conv_id"], kind, _body(request),
                name=request.query_params.get("name", ""), tenant_wide=who.tenant_wide,
            )
        except Problem as problem:
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except MediaError as exc:
            return media_problem(exc, request, services)
        return JSONResponse(media.describe(attachment, _content_path(attachment.id)), status_code=201)

    async def show(request: Request) -> Response:
        media = _media(services)
        try:
            who = await caller(request, services, READ_SCOPES)
            attachment = await media.visible(who.tenant, who.user, who.role, request.path_params["attachment_id"], tenant_wide=who.tenant_wide)
        except Problem as problem:
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except MediaError as exc:
            return media_problem(exc, request, services)
        return JSONResponse(media.describe(attachment, _content_path(attachment.id)), headers={"cache-control": "no-store"})

    async def delete(request: Request) -> Response:
        media = _media(services)
        try:
            who = await caller(request, services, DELETE_SCOPES)
            await media.delete(who.tenant, who.user, who.role, request.path_params["attachment_id"])
        except Problem as problem:
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except MediaError as exc:
            return media_problem(exc, request, services)
        return Response(status_code=204)

    async def content(request: Request) -> Response:
        media = _media(services)
        attachment_id = request.path_params["attachment_id"]
        q = request.query_params
        variant = q.get("variant", "original")
        attachment = None
        try:
            if "sig" in q or "expires" in q:
                attachment = await media.by_signature(attachment_id, variant, q.get("expires", ""), q.get("sig", ""))
            else:
                who = await caller(request, services, READ_SCOPES)
                if variant not in VARIANTS:
                    raise MediaError("not_found", f"variant must be one of {', '.join(VARIANTS)}")
                attachment = await media.visible(who.tenant, who.user, who.role, attachment_id, tenant_wide=who.tenant_wide)
            download = await media.download(attachment, variant, request.headers.get("range"))
        except Problem as problem:
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except MediaError as exc:
            extra = None
            if exc.code == "range_not_satisfiable" and attachment:
                extra = unsatisfiable_headers(attachment, variant, await media.display_size(attachment))
            return media_problem(exc, request, services, extra)
        if request.method == "HEAD":
            return Response(status_code=download.status, headers=download.headers)
        return StreamingResponse(download.chunks(), status_code=download.status, headers=download.headers)

    return [
        Route("/v1/conversations/{conv_id}/attachments", upload, methods=["POST"]),
        Route("/v1/attachments/{attachment_id}", show, methods=["GET"]),
        Route("/v1/attachments/{attachment_id}", delete, methods=["DELETE"]),
        Route("/v1/attachments/{attachment_id}/content", content, methods=["GET", "HEAD"]),
    ]


def _problem_responses(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": TITLES.get(s, "Error"), "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/MediaProblem"}}}}
        for s in statuses
    }


_ATTACHMENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "conversation": {"type": "string"}, "uploader": {"type": "string"},
        "kind": {"type": "string", "enum": list(UPLOAD_KINDS)}, "content_type": {"type": "string"},
        "size": {"type": "integer"}, "name": {"type": "string"}, "created_at": {"type": "integer"},
        "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
        "duration_ms": {"type": ["integer", "null"]}, "url": {"type": "string"},
        "display_url": {"type": ["string", "null"]}, "thumbnail_url": {"type": ["string", "null"]}, "urls_expire_at": {"type": "integer"},
    },
}
_SECURITY = [{"apiKey": []}, {"clientToken": []}]
_ID = {"name": "attachment_id", "in": "path", "required": True, "schema": {"type": "string"}}

#: The OpenAPI paths of these endpoints (the media codes a problem may carry: docs/media.md).
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/conversations/{conv_id}/attachments": {
        "post": {
            "operationId": "upload_attachment",
            "x-kefu-scopes": ["admin", *sorted(UPLOAD_SCOPES)],
            "x-kefu-client-token": "a participant of the conversation",
            "summary": "Upload a file into a conversation (a participant's client token, or an ingest/bot key); the body is the file.",
            "security": _SECURITY,
            "parameters": [
                {"name": "conv_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "kind", "in": "query", "required": True, "schema": {"type": "string", "enum": list(UPLOAD_KINDS)}},
                {"name": "name", "in": "query", "required": False, "schema": {"type": "string"}, "description": "The file name to show (never trusted for its type)."},
            ],
            "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"201": {"description": "Stored", "content": {"application/json": {"schema": _ATTACHMENT}}}, **_problem_responses(400, 401, 403, 404, 413, 415, 422, 503)},
        }
    },
    "/v1/attachments/{attachment_id}": {
        "get": {
            "operationId": "show_attachment",
            "x-kefu-scopes": ["admin", *sorted(READ_SCOPES)],
            "x-kefu-client-token": "a participant of the conversation, or a supervisor of the tenant",
            "summary": "An attachment's facts and fresh signed URLs (participants, the tenant's supervisors, read/bot/ingest keys).",
            "security": _SECURITY,
            "parameters": [_ID],
            "responses": {"200": {"description": "Success", "content": {"application/json": {"schema": _ATTACHMENT}}}, **_problem_responses(401, 403, 404, 410)},
        },
        "delete": {
            "operationId": "delete_attachment",
            "x-kefu-scopes": ["admin", *sorted(DELETE_SCOPES)],
            "x-kefu-client-token": "its uploader, or a supervisor of the tenant",
            "summary": "Delete an attachment: its bytes and thumbnail are removed, later fetches answer 410 (its uploader, the tenant's supervisors, admin/ingest/bot keys).",
            "security": _SECURITY,
            "parameters": [_ID],
            "responses": {"204": {"description": "Deleted (also when it already was)"}, **_problem_responses(401, 403, 404)},
        },
    },
    "/v1/attachments/{attachment_id}/content": {
        "get": {
            "operationId": "download_attachment",
            "x-kefu-scopes": ["admin", *sorted(READ_SCOPES)],
            "x-kefu-client-token": "a participant of the conversation, or a supervisor of the tenant; or none, with a signed URL",
            "summary": "An attachment's bytes, by credentials or by a signed URL (variant, expires, sig); Range requests are served.",
            "security": [*_SECURITY, {}],
            "parameters": [
                _ID,
                {"name": "variant", "in": "query", "required": False, "schema": {"type": "string", "enum": list(VARIANTS)}},
                {"name": "expires", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "sig", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "One byte range, e.g. `bytes=0-1023`."},
            ],
            "responses": {
                "200": {"description": "The whole", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "206": {"description": "One range", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                **_problem_responses(401, 403, 404, 410, 416),
            },
        }
    },
}


def openapi_schemas(problem: dict[str, Any]) -> dict[str, Any]:
    """The schemas these paths refer to: the API's Problem, whose ``code`` may also be a media code."""
    media_problem = json.loads(json.dumps(problem))
    media_problem["properties"]["code"]["enum"] = sorted(set(ERRORS) | set(MEDIA_ERRORS))
    media_problem["description"] = "A Problem whose `code` may also be one of the media codes (docs/media.md)."
    return {"MediaProblem": media_problem}
