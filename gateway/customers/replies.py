"""Quick replies: a shortcut (``/ship``), a title, a text with variables, optional attachments.

Pure functions: searching a list of replies and filling a text's variables from a context.
Variables are ``{customer.name}``, ``{order.id}``, ``{product.title}`` (and the other fields of
the customer's profile, latest order and current product). A variable the context cannot fill is
left as written and named in ``missing``, so the agent sees what to complete before sending.
"""

from __future__ import annotations

import re
from typing import Any

VARIABLE = re.compile(r"\{(customer|order|product)\.([a-z_]+)\}")
MAX_SHORTCUT = 32
MAX_TEXT = 2000


def search(replies: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Replies whose shortcut starts with ``query`` first, then those whose title or text holds
    it (case-insensitive; Chinese matches as written); all of them for an empty query."""
    q = query.strip().lower()
    if not q:
        return replies
    by_shortcut = [r for r in replies if r["shortcut"].lower().startswith(q) or r["shortcut"].lower().lstrip("/").startswith(q)]
    rest = [r for r in replies if r not in by_shortcut and (q in r["title"].lower() or q in r["text"].lower())]
    return by_shortcut + rest


def fill(text: str, values: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
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


def values_from(context: dict[str, Any] | None, product: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The variables' values from a customer context and the conversation's product."""
    context = context or {}
    orders = context.get("orders") or []
    return {"customer": dict(context.get("profile") or {}), "order": dict(orders[0]) if orders else {}, "product": dict(product or {})}
