"""The HTTP side: one ASGI application (Starlette) served by Hypercorn on the gateway's Trio loop.

It answers ``/metrics``, ``/healthz``, ``/readyz`` and the REST API ``/v1`` (see docs/api.md).
Importing this package costs nothing: ``health`` is used by the WebSocket handshake too, and the
application itself is built by ``gateway.http.app``.
"""
