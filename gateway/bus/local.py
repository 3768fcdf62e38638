"""The in-process bus: nodes in one process (one node in production, several in tests).

Publishing calls every attached node synchronously, in attach order, so per-conversation order is
the publisher's order and nothing is copied or encoded again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .base import BusHandler

if TYPE_CHECKING:
    from ..model import Conversation
    from ..transport.connection import Connection


class LocalBus:
    def __init__(self) -> None:
        self._handlers: list[BusHandler] = []

    async def run(self, handler: BusHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._handlers.append(handler)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._handlers.remove(handler)

    def publish_message(self, conv_id: str, seq: int, frame: bytes, origin: Connection | None) -> None:
        for handler in self._handlers:
            handler.on_message(conv_id, seq, frame, origin)

    def publish_event(self, conv_id: str, frame: bytes, skip_user: str | None = None) -> None:
        for handler in self._handlers:
            handler.on_event(conv_id, frame, skip_user)

    def publish_conversation(self, conv: Conversation) -> None:
        for handler in self._handlers:
            handler.on_conversation(conv)

    def publish_membership(self, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        for handler in self._handlers:
            handler.on_membership(conv_id, tenant, user, role, joined)
