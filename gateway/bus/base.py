"""The bus: how a gateway process tells the others about what it committed.

Every node delivers to its *own* local connections; the bus carries the same events to every node
(including the publisher, so one code path serves all). A bus promises per-conversation order: the
events of one conversation reach every node in the order they were published. Events carry ready
frame bytes, so a message is still encoded once however many nodes deliver it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ..model import Conversation
    from ..transport.connection import Connection


class BusHandler(Protocol):
    """What a node exposes to the bus (``gateway.node.Node`` implements it)."""

    def on_message(self, conv_id: str, seq: int, frame: bytes, origin: Connection | None) -> None:
        """A durable message of ``conv_id``: deliver ``frame`` to local subscribers."""

    def on_event(self, conv_id: str, frame: bytes, skip_user: str | None) -> None:
        """An unsequenced event (receipt, typing, presence, membership notice)."""

    def on_conversation(self, conv: Conversation) -> None:
        """A conversation's status or routing fields changed: refresh caches."""

    def on_membership(self, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        """``user`` joined or left ``conv_id``: update caches and local subscriptions."""


class Bus(Protocol):
    async def run(self, handler: BusHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Attach ``handler`` and deliver events to it until cancelled."""

    def publish_message(self, conv_id: str, seq: int, frame: bytes, origin: Connection | None) -> None: ...

    def publish_event(self, conv_id: str, frame: bytes, skip_user: str | None = None) -> None: ...

    def publish_conversation(self, conv: Conversation) -> None: ...

    def publish_membership(self, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None: ...
