"""Who may do what to a conversation: one table, action × role × relation, and one check.

The table is data: ``docs/authorization.md`` is rendered from it (``python -m
gateway.conversations`` prints it; a test checks the file matches), and a test asserts every
cell against the conversation service. No handler decides access by itself.

Relations of a principal to a conversation:

- ``participant``: a member of the conversation (the customer is always one);
- ``same_tenant``: the conversation is in the principal's tenant, the principal is not a member;
- ``other_tenant``: the conversation is in another tenant (or does not exist).

Outcomes are ``allow`` or the protocol's error code. Which ids exist is never revealed: a shopper
gets the same answer for another's conversation as for none (``not_found``, or ``forbidden`` for
what no shopper may do at all), and so does everybody for another tenant's. A cell that cannot arise (the server itself is never a participant) is None.
Actions that do not name a conversation (``open``, ``list``, ``status``, ``queues``) have only the
``same_tenant`` column.

What is done to an uploaded file itself (deleting it) depends on who uploaded it, not on who is
in its conversation now: :data:`ATTACHMENT_TABLE` has the relations ``uploader``, ``same_tenant``
(not the uploader) and ``other_tenant`` (or no such attachment), under the same rules.
"""

from __future__ import annotations

from ..model import SYSTEM
from ..protocol.errors import RequestError

ALLOW = "allow"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"

ROLES = ("shopper", "agent", "supervisor", "bot", SYSTEM)
PARTICIPANT, SAME_TENANT, OTHER_TENANT = RELATIONS = ("participant", "same_tenant", "other_tenant")

A, F, N, X = ALLOW, FORBIDDEN, NOT_FOUND, None

# Actions that name no conversation: decided on the role alone, in the principal's own tenant.
TENANT_ACTIONS = ("open", "list", "status", "queues")

# action -> role -> (participant, same_tenant, other_tenant)
TABLE: dict[str, dict[str, tuple[str | None, str | None, str | None]]] = {
    # a shopper opens a conversation in their own tenant, as its customer
    "open": {"shopper": (X, A, X), "agent": (X, F, X), "supervisor": (X, F, X), "bot": (X, F, X), SYSTEM: (X, F, X)},
    # everybody lists in their own tenant; what the list holds depends on the role (see service.list)
    "list": {"shopper": (X, A, X), "agent": (X, A, X), "supervisor": (X, A, X), "bot": (X, A, X), SYSTEM: (X, A, X)},
    # staff join any conversation of their tenant; a shopper only re-joins their own
    "join": {"shopper": (A, N, N), "agent": (A, A, N), "supervisor": (A, A, N), "bot": (A, A, N), SYSTEM: (X, F, N)},
    # the customer cannot leave (they close instead)
    "leave": {"shopper": (F, N, N), "agent": (A, F, N), "supervisor": (A, F, N), "bot": (A, F, N), SYSTEM: (X, F, N)},
    "close": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    # the client's durable, idempotent send (with a cmid): members only
    "send": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, F, N), "bot": (A, F, N), SYSTEM: (X, F, N)},
    # a message the server writes on behalf of a bot or of the system (bot answers, notices, REST)
    "post": {"shopper": (F, N, N), "agent": (F, F, N), "supervisor": (F, F, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    "receipt": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, F, N), "bot": (A, F, N), SYSTEM: (X, F, N)},
    "typing": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, F, N), "bot": (A, F, N), SYSTEM: (X, F, N)},
    # reading: members, and a supervisor (or the tenant's backend) reads the whole tenant
    "history": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    "catch_up": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    # routing's requests (gateway.routing.service): access here, then routing's own rules on the
    # stage and the assignee (only the assigned agent or a supervisor transfers or resolves)
    "status": {"shopper": (X, F, X), "agent": (X, A, X), "supervisor": (X, A, X), "bot": (X, F, X), SYSTEM: (X, F, X)},
    "queues": {"shopper": (X, F, X), "agent": (X, F, X), "supervisor": (X, A, X), "bot": (X, F, X), SYSTEM: (X, A, X)},
    "take": {"shopper": (F, F, F), "agent": (A, A, N), "supervisor": (A, A, N), "bot": (F, F, N), SYSTEM: (X, F, N)},
    "transfer": {"shopper": (F, F, F), "agent": (A, A, N), "supervisor": (A, A, N), "bot": (F, F, N), SYSTEM: (X, A, N)},
    "resolve": {"shopper": (A, N, N), "agent": (A, A, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    # taking a message back: its sender (a short while after sending), or a supervisor or the
    # tenant's backend (moderation, any message); the service checks the sender and the time
    "recall": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (X, A, N)},
    # asking routing for a human: the shopper, or the conversation's bot handing over
    "handoff": {"shopper": (A, N, N), "agent": (F, F, N), "supervisor": (F, F, N), "bot": (A, F, N), SYSTEM: (X, F, N)},
    # stage, assignee, group, tags: the server's routing, a supervisor, or an agent serving it
    "update": {"shopper": (F, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (F, F, N), SYSTEM: (X, A, N)},
    # adding or removing someone else (assignment, transfer): the server's routing only
    "assign": {"shopper": (F, N, N), "agent": (F, F, N), "supervisor": (F, F, N), "bot": (F, F, N), SYSTEM: (X, A, N)},
}

UPLOADER = "uploader"
ATTACHMENT_RELATIONS = (UPLOADER, SAME_TENANT, OTHER_TENANT)

# action -> role -> (uploader, same_tenant, other_tenant), for an attachment (gateway.media)
ATTACHMENT_TABLE: dict[str, dict[str, tuple[str | None, str | None, str | None]]] = {
    # who sent a file may take it back; so may the tenant's supervisors and its backend (an admin
    # API key), who answer for what the tenant keeps. A shopper learns nothing of others' files.
    "delete_attachment": {"shopper": (A, N, N), "agent": (A, F, N), "supervisor": (A, A, N), "bot": (A, F, N), SYSTEM: (A, A, N)},
}
del A, F, N, X

# What a refusal says, per action; the code comes from the table.
MESSAGES: dict[tuple[str, str], str] = {
    ("open", FORBIDDEN): "only shoppers open conversations",
    ("list", FORBIDDEN): "you may not list conversations",
    ("leave", FORBIDDEN): "the customer cannot leave their conversation; close it instead",
    ("post", FORBIDDEN): "only a participating bot or the system posts on the server's behalf",
    ("status", FORBIDDEN): "only agents and supervisors take conversations",
    ("queues", FORBIDDEN): "only supervisors see the queues",
    ("take", FORBIDDEN): "only agents and supervisors take conversations",
    ("transfer", FORBIDDEN): "only the assigned agent or a supervisor transfers a conversation",
    ("resolve", FORBIDDEN): "only the assigned agent, the bot, the customer or a supervisor resolves a conversation",
    ("handoff", FORBIDDEN): "only the shopper or the conversation's bot asks for a handoff",
    ("recall", FORBIDDEN): "only a participant recalls a message (their own), or a supervisor",
    ("update", FORBIDDEN): "only a supervisor, a participating agent or the system changes a conversation",
    ("assign", FORBIDDEN): "only the system adds or removes other participants",
}
ATTACHMENT_MESSAGES: dict[tuple[str, str], str] = {
    ("delete_attachment", FORBIDDEN): "only its uploader or a supervisor of the tenant deletes an attachment",
    ("delete_attachment", NOT_FOUND): "no such attachment",
}
NOT_A_MEMBER = "you are not a participant of this conversation: join it first"
NO_SUCH_CONVERSATION = "no such conversation"


def relation(tenant: str, user: str, role: str, conv_tenant: str | None, members: object) -> str:
    """How a principal relates to a conversation (``conv_tenant`` None: there is none). The
    system is never a participant, whatever user id it acts under."""
    if conv_tenant is None or conv_tenant != tenant:
        return OTHER_TENANT
    if user in members and role != SYSTEM:  # type: ignore[operator]
        return PARTICIPANT
    return SAME_TENANT


def decide(action: str, role: str, rel: str) -> str:
    """The table's outcome: ``allow`` or an error code. A role not in the table is refused."""
    row = TABLE[action].get(role)
    if row is None:
        return NOT_FOUND if rel != PARTICIPANT else FORBIDDEN
    outcome = row[RELATIONS.index(rel)]
    return FORBIDDEN if outcome is None else outcome


def check(action: str, who: object, conv_tenant: str | None, members: object = ()) -> None:
    """Raise the table's RequestError unless ``who`` (tenant, user, role) may do ``action`` to a
    conversation of ``conv_tenant`` with ``members`` (for ``open`` and ``list``: the own tenant)."""
    rel = relation(who.tenant, who.user, who.role, conv_tenant, members)  # type: ignore[attr-defined]
    outcome = decide(action, who.role, rel)  # type: ignore[attr-defined]
    if outcome is not ALLOW:
        raise refusal(action, outcome)


def refusal(action: str, code: str) -> RequestError:
    if code == NOT_FOUND:
        return RequestError(NOT_FOUND, NO_SUCH_CONVERSATION)
    return RequestError(code, MESSAGES.get((action, code), NOT_A_MEMBER))


def attachment_relation(tenant: str, user: str, attachment_tenant: str | None, uploader: str) -> str:
    """How a principal relates to an attachment (``attachment_tenant`` None: there is none)."""
    if attachment_tenant is None or attachment_tenant != tenant:
        return OTHER_TENANT
    return UPLOADER if user == uploader else SAME_TENANT


def decide_attachment(action: str, role: str, rel: str) -> str:
    """:data:`ATTACHMENT_TABLE`'s outcome: ``allow`` or an error code (``not_found``, ``forbidden``)."""
    row = ATTACHMENT_TABLE[action].get(role)
    if row is None:
        return NOT_FOUND
    outcome = row[ATTACHMENT_RELATIONS.index(rel)]
    return FORBIDDEN if outcome is None else outcome


def table_rows(table: dict[str, dict[str, tuple[str | None, str | None, str | None]]]) -> list[str]:
    """One Markdown row per action and role of ``table``: its outcomes, `—` where a case cannot arise."""
    return [
        f"| {action} | {role} | {' | '.join(f'`{c}`' if c is not None else '—' for c in rows[role])} |"
        for action, rows in table.items() for role in ROLES
    ]


def markdown() -> str:
    """The table as the Markdown of ``docs/authorization.md``."""
    lines = [
        "# Authorization",
        "",
        "Generated from `gateway/conversations/authz.py` (`python -m gateway.conversations >"
        " docs/authorization.md`); a test checks that this file matches the table.",
        "",
        "Every conversation action of every interface (WebSocket, REST, routing, bots) is decided by"
        " this one table in `ConversationService`. Columns are the caller's relation to the"
        " conversation: **participant** (a member), **same tenant** (not a member), **other tenant**"
        " (or no such conversation). A shopper gets the same answer for another's"
        " conversation as for none, and so does everybody for another tenant's: which ids exist is never revealed. `—`: the case cannot arise."
        " Role `system` is the server itself or a tenant's backend (REST API key).",
        "",
        "| action | role | participant | same tenant | other tenant |",
        "|---|---|---|---|---|",
    ]
    lines += table_rows(TABLE)
    lines.append("")
    lines.append("After access is granted, the conversation's state may still refuse: a closed conversation"
                 " takes no new messages or participants (`conversation_closed`).")
    lines += [
        "",
        "## Attachments",
        "",
        "What is done to an uploaded file itself (`DELETE /v1/attachments/{id}`, docs/media.md) is decided by"
        " who uploaded it: **uploader**, **same tenant** (not the uploader), **other tenant** (or no such"
        " attachment). A shopper gets the same answer for another's file as for none. Uploading and fetching"
        " follow the conversation instead: uploading is `send` and fetching is `history` in the table above"
        " (docs/media.md).",
        "",
        "| action | role | uploader | same tenant | other tenant |",
        "|---|---|---|---|---|",
    ]
    lines += table_rows(ATTACHMENT_TABLE)
    lines.append("")
    return "\n".join(lines)

