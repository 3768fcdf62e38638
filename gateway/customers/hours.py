"""Business hours per tenant: when agents are at work, and when they are back.

``{"utc_offset_min": 480, "days": [0, 1, 2, 3, 4], "open": "09:00", "close": "18:00"}``: days are
ISO weekdays counted from Monday = 0, times are the tenant's local wall clock. No hours set: always
open. Pure functions of a time (seconds since the epoch): tests pass the time they need.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from ..protocol.errors import RequestError


def check(hours: dict[str, Any]) -> dict[str, Any]:
    """The hours, normalised, or bad_request naming the field."""
    offset = hours.get("utc_offset_min", 0)
    if type(offset) is not int or not -14 * 60 <= offset <= 14 * 60:
        raise RequestError("bad_request", "field `utc_offset_min` must be minutes between -840 and 840")
    days = hours.get("days", [0, 1, 2, 3, 4])
    if type(days) is not list or not days or not all(type(d) is int and 0 <= d <= 6 for d in days):
        raise RequestError("bad_request", "field `days` must be a non-empty list of weekdays 0 (Monday) .. 6")
    opening, closing = _minutes(hours.get("open", "09:00"), "open"), _minutes(hours.get("close", "18:00"), "close")
    if opening >= closing:
        raise RequestError("bad_request", "field `close` must be after `open`")
    return {"utc_offset_min": offset, "days": sorted(set(days)), "open": hours.get("open", "09:00"), "close": hours.get("close", "18:00")}


def _minutes(text: object, name: str) -> int:
    if type(text) is not str or len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise RequestError("bad_request", f"field `{name}` must be HH:MM")
    h, m = int(text[:2]), int(text[3:])
    if h > 24 or m > 59 or (h == 24 and m):
        raise RequestError("bad_request", f"field `{name}` must be HH:MM")
    return h * 60 + m


def is_open(hours: dict[str, Any] | None, at: float) -> bool:
    if not hours:
        return True
    local = datetime.fromtimestamp(at, timezone(timedelta(minutes=hours["utc_offset_min"])))
    minute = local.hour * 60 + local.minute
    return local.weekday() in hours["days"] and _minutes(hours["open"], "open") <= minute < _minutes(hours["close"], "close")


def back_at(hours: dict[str, Any], at: float) -> float:
    """When agents are next at work (``at`` itself when open): seconds since the epoch."""
    if is_open(hours, at):
        return at
    tz = timezone(timedelta(minutes=hours["utc_offset_min"]))
    local = datetime.fromtimestamp(at, tz)
    opening = _minutes(hours["open"], "open")
    for days_ahead in range(8):
        day = (local + timedelta(days=days_ahead)).replace(hour=opening // 60, minute=opening % 60, second=0, microsecond=0)
        if day.weekday() in hours["days"] and day > local:
            return day.timestamp()
    raise AssertionError("some weekday is a working day")


def back_text(hours: dict[str, Any], at: float, language: str = "zh") -> str:
    """What the shopper reads outside hours: when agents are back."""
    back = datetime.fromtimestamp(back_at(hours, at), timezone(timedelta(minutes=hours["utc_offset_min"])))
    local = datetime.fromtimestamp(at, back.tzinfo)
    days = (back.date() - local.date()).days
    when_zh = {0: "今天", 1: "明天"}.get(days, f"{back.month}月{back.day}日")
    when_en = {0: "today", 1: "tomorrow"}.get(days, back.strftime("%b %d"))
    if language == "en":
        return f"Our agents are away now and back {when_en} at {back:%H:%M}. Leave a message and we will answer it first thing."
    return f"人工客服现在不在线，将于{when_zh} {back:%H:%M} 上线。请留言，客服上线后会第一时间回复您。"
