"""The bus: how a gateway process tells the others (and itself) what it committed.

Every node delivers to its *own* local connections; the bus carries the same events to every node,
the publisher included, so one code path serves all. Events carry the publishing node's id and
plain data only (ids, ints, bools, ready frame bytes, ``Conversation`` records), never live objects,
so a bus may cross processes; a node recognises its own echoes by its node id (for example, only
the publishing node knows the ``origin`` session that must not get its own message back).

Contract (``tests/bus/test_bus_contract.py`` runs it against every implementation):

- events of one conversation reach every attached handler in the order they were published;
- a publish that cannot be handed over raises ``BusError`` (never dropped in silence): after
  ``close()``, or when a handler or the transport fails; the caller logs and counts it;
- publishing with no handler attached is not an error (no node to tell).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ..model import Conversation


class BusError(Exception):
    """A publish that did not reach every node it should have."""


class BusHandler(Protocol):
    """What a node exposes to the bus (``gateway.node.Node`` implements it). ``node``: the
    publishing node's id."""

    def on_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None:
        """A durable message of ``conv_id``: deliver ``frame`` to local subscribers but the
        ``origin`` session (meaningful on the publishing node only)."""

    def on_event(self, node: str, conv_id: str, frame: bytes, skip_user: str | None) -> None:
        """An unsequenced event (receipt, typing, presence, membership notice)."""

    def on_conversation(self, node: str, conv: Conversation) -> None:
        """A conversation's status or routing fields changed: refresh caches."""

    def on_membership(self, node: str, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        """``user`` joined or left ``conv_id``: update caches and local subscriptions."""

    def on_user(self, node: str, tenant: str, user: str, frame: bytes) -> None:
        """A frame for every live connection of one user (assignment offers)."""

    def on_resync(self) -> None:
        """Events may have been lost (a bus across processes re-established its subscription):
        read what was missed from the store. The in-process bus never calls it."""


class Bus(Protocol):
    async def run(self, handler: BusHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Attach ``handler`` and deliver events to it until cancelled."""

    def publish_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None: ...

    def publish_event(self, node: str, conv_id: str, frame: bytes, skip_user: str | None = None) -> None: ...

    def publish_conversation(self, node: str, conv: Conversation) -> None: ...

    def publish_membership(self, node: str, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None: ...

    def publish_user(self, node: str, tenant: str, user: str, frame: bytes) -> None: ...

    def close(self) -> None:
        """Stop taking publishes: every later publish raises ``BusError``."""
