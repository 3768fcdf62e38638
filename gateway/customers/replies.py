"""Quick replies: a shortcut (``/ship``), a title, a text with variables, optional attachments.

Pure functions: searching a list of replies. Their texts' variables (``{customer.name}``,
``{order.id}``, ``{product.title}``) are gateway.variables'; one the context cannot fill is left
as written and named in ``missing``, so the agent sees what to complete before sending.
"""

from __future__ import annotations

from typing import Any

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


