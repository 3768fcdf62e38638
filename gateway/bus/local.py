"""The in-process bus: nodes in one process (one node in production, several in tests).

Publishing calls every attached node synchronously, in attach order, so per-conversation order is
the publisher's order and nothing is copied or encoded again. A handler that raises does not keep
the event from the others; the publish then raises ``BusError`` naming the failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .base import BusError, BusHandler

if TYPE_CHECKING:
    from ..model import Conversation

log = logging.getLogger("kefu.bus")


class LocalBus:
    def __init__(self) -> None:
        self._handlers: list[BusHandler] = []
        self._closed = False

    async def run(self, handler: BusHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._handlers.append(handler)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._handlers.remove(handler)

    def close(self) -> None:
        self._closed = True

    def publish_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None:
        if self._closed:
            raise BusError("bus closed")
        failed = None
        for handler in self._handlers:
            try:
                handler.on_message(node, conv_id, seq, frame, origin)
            except Exception as exc:
                log.exception("bus handler on_message failed")
                failed = exc
        if failed is not None:
            raise BusError(f"on_message: a handler failed: {failed!r}") from failed

    def publish_event(self, node: str, conv_id: str, frame: bytes, skip_user: str | None = None) -> None:
        self._each("on_event", node, conv_id, frame, skip_user)

    def publish_conversation(self, node: str, conv: Conversation) -> None:
        self._each("on_conversation", node, conv)

    def publish_membership(self, node: str, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        self._each("on_membership", node, conv_id, tenant, user, role, joined)

    def publish_user(self, node: str, tenant: str, user: str, frame: bytes) -> None:
        self._each("on_user", node, tenant, user, frame)

    def _each(self, method: str, *args: Any) -> None:
        if self._closed:
            raise BusError("bus closed")
        failed: Exception | None = None
        for handler in self._handlers:
            try:
                getattr(handler, method)(*args)
            except Exception as exc:
                log.exception("bus handler %s failed", method)
                failed = exc
        if failed is not None:
            raise BusError(f"{method}: a handler failed: {failed!r}") from failed
