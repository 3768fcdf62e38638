"""The conversation lifecycle: every stage and every allowed move, in one table.

    opened ──bot──▶ bot ──handoff──▶ queued ──assign──▶ assigned ──resolve──▶ resolved ──close──▶ closed
       └──enqueue──────────────────▲   ▲  └──────────────take─────▲   │  │         │
                                   │   └──────requeue/transfer────────┘  │         │
                                   └────────────────reopen───────────────┼─────────┘
                                                                         └──transfer_to_agent──▶ assigned

Any stage but closed may also ``close``; a bot may ``resolve`` a conversation it answered.
The routing service is the only caller; it stores each move as an event in the conversation.
"""

from __future__ import annotations

OPENED = "opened"
BOT = "bot"
QUEUED = "queued"
ASSIGNED = "assigned"
RESOLVED = "resolved"
CLOSED = "closed"

STAGES = (OPENED, BOT, QUEUED, ASSIGNED, RESOLVED, CLOSED)

# (stage, event) -> next stage
TRANSITIONS: dict[tuple[str, str], str] = {
    (OPENED, "bot"): BOT,
    (OPENED, "enqueue"): QUEUED,
    (BOT, "handoff"): QUEUED,
    (BOT, "resolve"): RESOLVED,
    (QUEUED, "assign"): ASSIGNED,
    (QUEUED, "take"): ASSIGNED,
    (QUEUED, "transfer"): QUEUED,
    (ASSIGNED, "requeue"): QUEUED,
    (ASSIGNED, "transfer"): QUEUED,
    (ASSIGNED, "transfer_to_agent"): ASSIGNED,
    (QUEUED, "transfer_to_agent"): ASSIGNED,
    (ASSIGNED, "resolve"): RESOLVED,
    (RESOLVED, "reopen"): QUEUED,
}
for _stage in STAGES:
    if _stage != CLOSED:
        TRANSITIONS[(_stage, "close")] = CLOSED


class IllegalTransition(Exception):
    """An event that the conversation's stage does not allow (a caller's mistake or a race lost)."""

    def __init__(self, stage: str, event: str) -> None:
        super().__init__(f"cannot {event} a conversation that is {stage}")
        self.stage = stage
        self.event = event


def next_stage(stage: str, event: str) -> str:
    try:
        return TRANSITIONS[(stage, event)]
    except KeyError:
        raise IllegalTransition(stage, event) from None


def allowed(stage: str, event: str) -> bool:
    return (stage, event) in TRANSITIONS
