"""Variables in texts shop staff write: ``{customer.name}``, ``{order.id}``, ``{product.title}``,
any field of the customer's profile, their newest order, or the conversation's product.

Quick replies (gateway.customers) and the bot's answers (gateway.bot) fill them the same way.
A variable the context cannot fill is left as written and named, so that its caller decides what
to do: an agent completes it before sending; the bot says the answer written for no context.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

VARIABLE = re.compile(r"\{(customer|order|product)\.([a-z_]+)\}")


def used(text: str) -> list[str]:
    """The variables ``text`` uses, as written without braces (``order.id``)."""
    return [match.group(0)[1:-1] for match in VARIABLE.finditer(text)]


def fill(text: str, values: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The text with its variables filled from ``values`` ({"customer": {...}, "order": {...},
    "product": {...}}), and the variables that could not be."""
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        value = (values.get(match.group(1)) or {}).get(match.group(2))
        if value in (None, ""):
            missing.append(match.group(0)[1:-1])
            return match.group(0)
        return str(value)

    return VARIABLE.sub(one, text), missing


def values_from(context: Mapping[str, Any] | None, product: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The variables' values from a customer context and the conversation's product."""
    context = context or {}
    orders = context.get("orders") or []
    return {"customer": dict(context.get("profile") or {}), "order": dict(orders[0]) if orders else {}, "product": dict(product or {})}
