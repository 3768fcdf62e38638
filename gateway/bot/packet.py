"""The context packet: everything the agent who takes over needs, so the shopper never repeats
themselves. A plain dict of str/int/float/list/dict (no None, no dataclasses), ready for msgpack.
Its shape is the one docs/routing.md shows under "context".
"""

from __future__ import annotations

from typing import Any

from .session import SHOPPER, BotSession


def context_packet(session: BotSession) -> dict[str, Any]:
    """The packet for ``session`` as it stands (before or after a handoff)."""
    customer = session.customer
    transcript: list[dict[str, Any]] = []
    intents: list[dict[str, Any]] = []
    for index, turn in enumerate(session.turns):
        entry: dict[str, Any] = {"role": turn.role, "text": turn.text}
        if turn.at is not None:
            entry["ts"] = _ms(turn.at)  # ms, like the stored messages' ts
        transcript.append(entry)
        if turn.role == SHOPPER:
            intents.append(
                {
                    "turn": index,  # index into transcript
                    "intent": turn.intent or "",  # acted on ("" = not confident enough)
                    "matches": [{"intent": m.intent, "score": float(m.score)} for m in turn.matches],
                }
            )
    last = session.last_intent
    packet: dict[str, Any] = {
        "customer": {"tenant": customer.tenant, "user": customer.user, "channel": customer.channel, "name": customer.name},
        "language": session.language,
        "intent": last.intent if last else "",  # the latest recognised intent, for skill groups
        "category": last.category if last else "",
        "transcript": transcript,
        "intents": intents,
        "frustration": {
            "score": float(session.frustration.score),
            "reasons": [{"code": r.code, "detail": r.detail, "weight": float(r.weight)} for r in session.frustration.reasons],
        },
    }
    if session.handoff is not None:
        packet["handoff"] = {"reason": session.handoff.code, "detail": session.handoff.detail}
        if session.handoff_at is not None:
            packet["handoff"]["ts"] = _ms(session.handoff_at)
    return packet


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
