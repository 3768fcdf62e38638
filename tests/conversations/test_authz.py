"""The authorization table, cell by cell, against the conversation service (no sockets)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio

from gateway.conversations import authz
from gateway.conversations.service import system
from gateway.model import Principal
from gateway.protocol.errors import RequestError
from gateway.routing.config import RoutingConfig
from gateway.routing.service import RoutingService

from .conftest import completed, settle

DOC = Path(__file__).resolve().parents[2] / "docs" / "authorization.md"
TEXT = msgpack.packb({"kind": "text", "text": "在吗"})

CELLS = [
    (action, role, rel, outcome)
    for action, rows in authz.TABLE.items()
    for role, row in rows.items()
    for rel, outcome in zip(authz.RELATIONS, row)
    if outcome is not None
]


def test_the_doc_is_rendered_from_the_table():
    assert DOC.read_text() == authz.markdown(), "run: python -m gateway.conversations > docs/authorization.md"


def test_every_action_has_every_role_and_no_answer_reveals_an_id():
    for action, rows in authz.TABLE.items():
        assert set(rows) == set(authz.ROLES), action
        for role, row in rows.items():
            assert len(row) == len(authz.RELATIONS)
            if action in authz.TENANT_ACTIONS:
                assert row[0] is None and row[2] is None and row[1] is not None, (action, role)
            assert row[0] != authz.NOT_FOUND, (action, role)  # a member knows the conversation exists
            if row[2] is not None:  # another tenant's conversation answers as none does: refused
                assert row[2] in (authz.NOT_FOUND, authz.FORBIDDEN), (action, role)
            if role == "shopper" and action not in authz.TENANT_ACTIONS:
                assert row[1] == row[2], action  # another shopper's conversation answers as none does


ROUTING = {"status": {"status": "online"}, "queues": {}, "take": {}, "transfer": {"to_group": "default"}, "resolve": {}, "handoff": {}}
# Allowed here, these then meet routing's own rules (a queued conversation, the assigned agent…),
# so an allowed cell is checked at the access the routing request starts with.
ACCESS_ONLY = ("take", "transfer", "resolve")


async def _routing_request(svc, action: str, who: Principal, conv: str) -> None:
    """A routing request as the WebSocket handlers make it, with routing running."""
    routing = RoutingService(svc, RoutingConfig())
    refused: list[RequestError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(routing.run)
        try:
            reply = routing.requests()[action](who, {"conv": conv, **ROUTING[action]})
            if not isinstance(reply, dict):
                await reply
        except RequestError as exc:
            refused.append(exc)
        nursery.cancel_scope.cancel()
    if refused:
        raise refused[0]


async def _act(svc, action: str, who: Principal, conv: str) -> None:
    """Do ``action`` as ``who`` through the service's public API (raises RequestError if refused)."""
    if action == "open":
        await svc.open(who)
    elif action == "list":
        await svc.list(who)
    elif action == "join":
        await svc.join(who, conv)
    elif action == "leave":
        await svc.leave(who, conv)
    elif action == "close":
        await svc.close(who, conv)
    elif action == "send":
        result = await completed(lambda done: svc.send(who, conv, "c-1", TEXT, done))
        if isinstance(result, RequestError):
            raise result
    elif action == "post":
        await svc.post(who, conv, {"kind": "text", "text": "亲"})
    elif action == "receipt":
        result = await completed(lambda done: svc.receipt(who, conv, "read", 1, done))
        if isinstance(result, RequestError):
            raise result
    elif action == "typing":
        await settle(svc.typing(who, conv, True))
    elif action == "history":
        await svc.history(who, conv)
    elif action == "catch_up":
        await svc.catch_up(who, conv, 0)
    elif action == "update":
        await svc.update(who, conv, group="vip")
    elif action == "assign":
        await svc.add_participant(who, conv, "carol", "agent", "Carol")
    elif action == "recall":
        await svc.access(who, conv, "recall")  # refused here as the table says; then the service's own rules
        seq = 1  # the system's welcome: a supervisor or the backend may recall anyone's message
        if who.role not in ("supervisor", "system"):  # everyone else only their own
            sent = await completed(lambda done: svc.send(who, conv, "r-1", TEXT, done))
            seq = sent.message.seq
        assert (await svc.recall(who, conv, seq)).seq == seq
    elif action in ROUTING:
        await _routing_request(svc, action, who, conv)
    else:  # pragma: no cover - a new action needs a line here
        raise AssertionError(f"no way to exercise {action!r}")


@pytest.mark.parametrize(("action", "role", "rel", "outcome"), CELLS, ids=[f"{a}-{r}-{rel}" for a, r, rel, _ in CELLS])
async def test_cell(memory_service, action, role, rel, outcome):
    svc = memory_service
    opened = await svc.open(Principal("t1", "alice", "shopper", "app", "Alice"))
    conv = opened.conv.id
    await svc.post(system("t1"), conv, {"kind": "text", "text": "欢迎"})  # seq 1, for receipts
    if rel == authz.OTHER_TENANT:
        who = Principal("t2", "system" if role == "system" else f"x-{role}", role, "web", "X")
    elif rel == authz.PARTICIPANT:
        if role == "shopper":
            who = Principal("t1", "alice", "shopper", "app", "Alice")  # the customer
        else:
            who = Principal("t1", f"p-{role}", role, "web", "P")
            await svc.add_participant(system("t1"), conv, who.user, role, who.name)
    else:
        who = Principal("t1", "system" if role == "system" else f"s-{role}", role, "web", "S")
    assert authz.decide(action, role, rel) == outcome
    if outcome == authz.ALLOW and action in ACCESS_ONLY:
        assert (await svc.access(who, conv, action)).conv.id == conv
    elif outcome == authz.ALLOW:
        await _act(svc, action, who, conv)
    else:
        with pytest.raises(RequestError) as refused:
            await _act(svc, action, who, conv)
        assert refused.value.code == outcome


async def test_a_missing_conversation_is_not_found_for_everybody(service):
    for role in authz.ROLES:
        who = Principal("t1", "system" if role == "system" else "u", role, "web", "U")
        for action in ("join", "history", "close", "update", "take", "transfer", "resolve"):
            with pytest.raises(RequestError) as refused:
                if action in ACCESS_ONLY:
                    await _routing_request(service, action, who, "no-such-conversation")
                else:
                    await _act(service, action, who, "no-such-conversation")
            assert refused.value.code == authz.decide(action, role, authz.OTHER_TENANT), (role, action)
