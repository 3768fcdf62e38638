"""Logging setup: text for people, JSON lines for log pipelines.

Connection context travels in ``extra`` (conn, peer, tenant, user, role) and is printed by both
formats. Nothing here ever logs message bodies or tokens: callers do not pass them.
"""

from __future__ import annotations

import json
import logging
import sys
import time

CONTEXT = ("conn", "peer", "tenant", "user", "role")


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node  # this process's node id: every line of a cluster's logs says whose it is

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.node:
            entry["node"] = self.node
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def escape(text: str) -> str:
    """One log line stays one line: control and line-separator characters a peer could send
    (in a user id, a reason, a header) are written as escapes, so they cannot forge a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class TextFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        where = f"[{escape(node)}] " if node else ""
        super().__init__(f"%(asctime)s %(levelname)-7s {where.replace('%', '%%')}%(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={escape(str(getattr(record, k)))}" for k in CONTEXT if getattr(record, k, None) is not None)
        if not context:
            return line
        head, newline, traceback = line.partition("\n")  # a traceback follows the first line
        return f"{head} [{context}]{newline}{traceback}"


def configure(fmt: str, level: str, node: str = "") -> None:
    """Log to stderr in ``fmt``; every line carries ``node`` (the process's node id) when given."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
