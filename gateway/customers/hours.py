"""Business hours per tenant: when agents are at work, and when they are back.

The simple form is one window on some weekdays::

    {"utc_offset_min": 480, "days": [0, 1, 2, 3, 4], "open": "09:00", "close": "18:00"}

For a lunch break, other hours at the weekend, holidays and the working weekends that make up
for them (调休), give ``windows`` instead of ``days``/``open``/``close``, and ``dates``, whose
windows replace the weekday's on that date (an empty list: closed all day)::

    {"utc_offset_min": 480,
     "windows": [{"days": [0, 1, 2, 3, 4], "open": "09:00", "close": "12:00"},
                 {"days": [0, 1, 2, 3, 4], "open": "13:30", "close": "18:00"},
                 {"days": [5], "open": "10:00", "close": "16:00"}],
     "dates": {"2027-02-08": [], "2027-02-14": [{"open": "09:00", "close": "18:00"}]}}

Days are weekdays counted from Monday = 0, times and dates the tenant's local wall clock. No
hours set: always open. Pure functions of a time (seconds since the epoch): tests pass the time
they need.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from ..protocol.errors import RequestError

MAX_WINDOWS = 20  # weekly windows
MAX_DATES = 400  # dated exceptions: a year of holidays and more
MAX_WINDOWS_A_DAY = 4


def check(hours: dict[str, Any]) -> dict[str, Any]:
    """The hours, normalised, or bad_request naming the field."""
    offset = hours.get("utc_offset_min", 0)
    if type(offset) is not int or not -14 * 60 <= offset <= 14 * 60:
        raise RequestError("bad_request", "field `utc_offset_min` must be minutes between -840 and 840")
    if "windows" in hours:
        if any(name in hours for name in ("days", "open", "close")):
            raise RequestError("bad_request", "give `windows`, or `days` with `open` and `close`, not both")
        windows = hours["windows"]
        if type(windows) is not list or not 1 <= len(windows) <= MAX_WINDOWS:
            raise RequestError("bad_request", f"field `windows` must be a list of 1..{MAX_WINDOWS} windows")
        out: dict[str, Any] = {"utc_offset_min": offset, "windows": [_weekly(w, f"windows.{i}") for i, w in enumerate(windows)]}
    else:
        out = {"utc_offset_min": offset, **_weekly({k: hours[k] for k in ("days", "open", "close") if k in hours}, "")}
    if "dates" in hours:
        out["dates"] = _dates(hours["dates"])
    return out


def _weekly(window: Any, where: str) -> dict[str, Any]:
    prefix = f"{where}." if where else ""
    if type(window) is not dict or set(window) - {"days", "open", "close"}:
        raise RequestError("bad_request", f"field `{where}` must be {{days, open, close}}")
    days = window.get("days", [0, 1, 2, 3, 4])
    if type(days) is not list or not days or not all(type(d) is int and 0 <= d <= 6 for d in days):
        raise RequestError("bad_request", f"field `{prefix}days` must be a non-empty list of weekdays 0 (Monday) .. 6")
    return {"days": sorted(set(days)), **_span(window, where)}


def _span(window: Any, where: str) -> dict[str, str]:
    prefix = f"{where}." if where else ""
    if type(window) is not dict:
        raise RequestError("bad_request", f"field `{where}` must be {{open, close}}")
    opening, closing = window.get("open", "09:00"), window.get("close", "18:00")
    if _minutes(opening, f"{prefix}open") >= _minutes(closing, f"{prefix}close"):
        raise RequestError("bad_request", f"field `{prefix}close` must be after `{prefix}open`")
    return {"open": opening, "close": closing}


def _dates(dates: Any) -> dict[str, list[dict[str, str]]]:
    if type(dates) is not dict or len(dates) > MAX_DATES:
        raise RequestError("bad_request", f"field `dates` must map at most {MAX_DATES} dates (YYYY-MM-DD) to their windows")
    out = {}
    for day, spans in sorted(dates.items()):
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise RequestError("bad_request", f"field `dates`: {day!r} is not a date (YYYY-MM-DD)") from None
        if type(spans) is not list or len(spans) > MAX_WINDOWS_A_DAY or (spans and set().union(*(s for s in spans if type(s) is dict)) - {"open", "close"}):
            raise RequestError("bad_request", f"field `dates.{day}` must be a list of at most {MAX_WINDOWS_A_DAY} {{open, close}} (empty: closed)")
        out[day] = [_span(span, f"dates.{day}.{i}") for i, span in enumerate(spans)]
    return out


def _minutes(text: object, name: str) -> int:
    if type(text) is not str or len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise RequestError("bad_request", f"field `{name}` must be HH:MM")
    h, m = int(text[:2]), int(text[3:])
    if h > 24 or m > 59 or (h == 24 and m):
        raise RequestError("bad_request", f"field `{name}` must be HH:MM")
    return h * 60 + m


def _spans_on(hours: dict[str, Any], day: date) -> list[tuple[int, int]]:
    """The day's working spans in minutes of the local day, in order."""
    dated = (hours.get("dates") or {}).get(day.isoformat())
    if dated is not None:
        spans = dated
    else:
        windows = hours["windows"] if "windows" in hours else [hours]
        spans = [w for w in windows if day.weekday() in w["days"]]
    return sorted((_minutes(s["open"], "open"), _minutes(s["close"], "close")) for s in spans)


def _local(hours: dict[str, Any], at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone(timedelta(minutes=hours["utc_offset_min"])))


def is_open(hours: dict[str, Any] | None, at: float) -> bool:
    if not hours:
        return True
    local = _local(hours, at)
    minute = local.hour * 60 + local.minute
    return any(opening <= minute < closing for opening, closing in _spans_on(hours, local.date()))


def back_at(hours: dict[str, Any], at: float) -> float:
    """When agents are next at work (``at`` itself when open): seconds since the epoch."""
    if is_open(hours, at):
        return at
    local = _local(hours, at)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for days_ahead in range(MAX_DATES + 8):  # past every dated exception, a weekly window comes round
        day = (midnight + timedelta(days=days_ahead)).date()
        for opening, _ in _spans_on(hours, day):
            start = datetime(day.year, day.month, day.day, tzinfo=local.tzinfo) + timedelta(minutes=opening)
            if start > local:
                return start.timestamp()
    raise AssertionError("a weekly window comes round after at most MAX_DATES closed dates")


def back_text(hours: dict[str, Any], at: float, language: str = "zh") -> str:
    """What the shopper reads outside hours: when agents are back."""
    back = _local(hours, back_at(hours, at))
    local = _local(hours, at)
    days = (back.date() - local.date()).days
    when_zh = {0: "今天", 1: "明天"}.get(days, f"{back.month}月{back.day}日")
    when_en = {0: "today", 1: "tomorrow"}.get(days, back.strftime("%b %d"))
    if language == "en":
        return f"Our agents are away now and back {when_en} at {back:%H:%M}. Leave a message and we will answer it first thing."
    return f"人工客服现在不在线，将于{when_zh} {back:%H:%M} 上线。请留言，客服上线后会第一时间回复您。"
