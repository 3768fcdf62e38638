"""The SQL of a conversation list's filters, shared by the SQLite and PostgreSQL stores (they differ
only in their parameter mark): one place decides what each filter and the page cursor mean."""

from __future__ import annotations


def conversation_filters(
    mark: str,
    *,
    status: str | None,
    stage: str | None,
    assignee: str | None,
    channel: str | None,
    tag: str | None,
    since: int | None,
    before: int | None,
    before_id: str | None,
    limit: int,
) -> tuple[str, list[object]]:
    """``AND …`` conditions on conversations ``c``, then the newest-first order and the limit, with
    their parameters in order."""
    sql, params = "", []
    for column, value in (("status", status), ("stage", stage), ("assignee", assignee), ("channel", channel)):
        if value is not None:
            sql += f" AND c.{column} = {mark}"
            params.append(value)
    if since is not None:
        sql += f" AND c.created_at >= {mark}"
        params.append(since)
    if tag is not None:
        sql += f" AND EXISTS (SELECT 1 FROM conversation_tags AS t WHERE t.conv_id = c.id AND t.tag = {mark})"
        params.append(tag)
    if before is not None and before_id is not None:  # the page after the cursor (created_at, id)
        sql += f" AND (c.created_at < {mark} OR (c.created_at = {mark} AND c.id < {mark}))"
        params += [before, before, before_id]
    elif before is not None:
        sql += f" AND c.created_at < {mark}"
        params.append(before)
    sql += f" ORDER BY c.created_at DESC, c.id DESC LIMIT {mark}"
    params.append(limit)
    return sql, params
