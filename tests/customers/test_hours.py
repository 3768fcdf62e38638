"""Business hours with the clock injected: outside them the bot says when agents are back, a
request for a human becomes a message left (queued first, served first when agents are back) and
the wait estimate says so."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import trio

from gateway.customers import hours
from gateway.protocol.errors import RequestError

from ..http.conftest import client, new_key, problem
from ..support import connect, token
from .conftest import events

BEIJING = timezone(timedelta(hours=8))
WEEKDAYS = {"utc_offset_min": 480, "days": [0, 1, 2, 3, 4], "open": "09:00", "close": "18:00"}


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, day, hour, minute, tzinfo=BEIJING).timestamp()  # 7 December 2026 is a Monday


def test_open_and_back_at_follow_the_tenants_clock():
    assert hours.is_open(None, at(12, 3))  # no hours: always open
    assert hours.is_open(WEEKDAYS, at(8, 9)) and hours.is_open(WEEKDAYS, at(8, 17, 59))
    assert not hours.is_open(WEEKDAYS, at(8, 18)) and not hours.is_open(WEEKDAYS, at(8, 8, 59))
    assert hours.back_at(WEEKDAYS, at(8, 20)) == at(9, 9)
    assert hours.back_at(WEEKDAYS, at(8, 7)) == at(8, 9)
    assert hours.back_at(WEEKDAYS, at(11, 20)) == at(14, 9)  # Friday evening: Monday morning
    assert hours.back_at(WEEKDAYS, at(8, 10)) == at(8, 10)
    assert "明天 09:00" in hours.back_text(WEEKDAYS, at(8, 20))
    assert "今天 09:00" in hours.back_text(WEEKDAYS, at(8, 7))
    assert "12月14日 09:00" in hours.back_text(WEEKDAYS, at(11, 20))
    assert "back tomorrow at 09:00" in hours.back_text(WEEKDAYS, at(8, 20), "en")


@pytest.mark.parametrize("bad, field", [
    ({"utc_offset_min": 900}, "utc_offset_min"), ({"days": []}, "days"), ({"days": [7]}, "days"),
    ({"open": "9:00"}, "open"), ({"close": "25:00"}, "close"), ({"open": "18:00", "close": "09:00"}, "close"),
])
def test_bad_hours_are_refused_naming_the_field(bad, field):
    with pytest.raises(RequestError) as refused:
        hours.check({**WEEKDAYS, **bad})
    assert refused.value.code == "bad_request" and f"`{field}`" in refused.value.message


# A Beijing shop in the Spring Festival of 2027 (10 February 2027 is a Wednesday): a lunch break on
# weekdays, shorter Saturdays, closed on Sundays, three days of holiday and one Sunday worked to
# make up for them (调休).
FESTIVE = {
    "utc_offset_min": 480,
    "windows": [
        {"days": [0, 1, 2, 3, 4], "open": "09:00", "close": "12:00"},
        {"days": [0, 1, 2, 3, 4], "open": "13:30", "close": "18:00"},
        {"days": [5], "open": "10:00", "close": "16:00"},
    ],
    "dates": {"2027-02-10": [], "2027-02-11": [], "2027-02-12": [], "2027-02-07": [{"open": "09:00", "close": "18:00"}]},
}


def at2027(month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(2027, month, day, hour, minute, tzinfo=BEIJING).timestamp()


def test_a_lunch_break_weekend_hours_holidays_and_a_working_sunday():
    checked = hours.check(FESTIVE)
    assert checked == FESTIVE | {"dates": dict(sorted(FESTIVE["dates"].items()))}
    # Monday 1 February: a lunch break
    assert hours.is_open(checked, at2027(2, 1, 11, 59)) and not hours.is_open(checked, at2027(2, 1, 12, 0))
    assert hours.back_at(checked, at2027(2, 1, 12, 30)) == at2027(2, 1, 13, 30)
    assert "今天 13:30" in hours.back_text(checked, at2027(2, 1, 12, 30))
    # Saturday: 10:00-16:00; Sunday closed, so Saturday evening is back on Monday
    assert hours.is_open(checked, at2027(2, 6, 15, 59)) and not hours.is_open(checked, at2027(2, 6, 9, 59))
    assert hours.back_at(checked, at2027(1, 30, 17)) == at2027(2, 1, 9)
    # Sunday 7 February is worked (调休); the holiday runs Wednesday to Friday
    assert hours.is_open(checked, at2027(2, 7, 9)) and not hours.is_open(checked, at2027(2, 7, 18))
    assert hours.back_at(checked, at2027(2, 9, 18, 30)) == at2027(2, 13, 10)  # Tuesday evening: Saturday at 10:00
    assert "2月13日 10:00" in hours.back_text(checked, at2027(2, 9, 18, 30))
    assert not hours.is_open(checked, at2027(2, 11, 10))


@pytest.mark.parametrize("bad, field", [
    ({**FESTIVE, "days": [0]}, "windows"),
    ({**FESTIVE, "windows": []}, "windows"),
    ({**FESTIVE, "windows": [{"days": [9], "open": "09:00", "close": "10:00"}]}, "windows.0.days"),
    ({**FESTIVE, "windows": [{"days": [1], "open": "12:00", "close": "10:00"}]}, "windows.0.close"),
    ({**FESTIVE, "dates": {"2027-02-30": []}}, "dates"),
    ({**FESTIVE, "dates": {"2027-02-10": [{"open": "9"}]}}, "dates.2027-02-10.0.open"),
    ({**FESTIVE, "dates": {"2027-02-10": [{"open": "09:00", "close": "10:00"}] * 5}}, "dates.2027-02-10"),
    ({**FESTIVE, "dates": {f"2027-01-{d:02d}": [] for d in range(1, 32)} | {f"2028-{m:02d}-{d:02d}": [] for m in range(1, 13) for d in range(1, 29)} | {f"2029-{m:02d}-{d:02d}": [] for m in range(1, 13) for d in range(1, 10)}}, "dates"),
])
def test_bad_windows_and_dates_are_refused_naming_the_field(bad, field):
    with pytest.raises(RequestError) as refused:
        hours.check(bad)
    assert refused.value.code == "bad_request" and f"`{field}`" in refused.value.message, refused.value.message


async def test_hours_with_windows_and_dates_over_rest(desk):
    gw = desk.gateway
    gw.node.workspace.clock = lambda: at2027(2, 9, 18, 30)
    with trio.fail_after(20):
        put = await desk.put("/v1/business-hours", json=FESTIVE)
        assert put.status_code == 200, put.text
        assert put.json()["hours"]["windows"] == FESTIVE["windows"] and put.json()["back_at"] == int(at2027(2, 13, 10) * 1000)
        problem(await desk.put("/v1/business-hours", json={**FESTIVE, "open": "09:00"}), 422, "bad_request")
        problem(await desk.put("/v1/business-hours", json={**FESTIVE, "dates": {"tomorrow": []}}), 422, "bad_request")
        assert (await desk.get("/v1/business-hours")).json()["hours"]["dates"]["2027-02-10"] == []


async def test_after_hours_a_handoff_is_a_message_left_and_served_first_in_the_morning(desk):
    gw = desk.gateway
    now = [at(8, 17)]
    gw.node.workspace.clock = lambda: now[0]
    with trio.fail_after(20):
        assert (await desk.put("/v1/business-hours", json=WEEKDAYS)).json()["open_now"] is True
        async with connect(gw.url, token("early"), resume={}) as early, connect(gw.url, token("late"), resume={}) as late:
            in_hours = (await early.ok("open"))["conv"]["id"]
            queued = (await events(early, in_hours, "queued"))[0]
            assert "leave_message" not in queued
            now[0] = at(8, 20)
            shown = (await desk.get("/v1/business-hours")).json()
            assert shown["open_now"] is False and shown["back_at"] == int(at(9, 9) * 1000)
            left = (await late.ok("open"))["conv"]["id"]
            notice = (await events(late, left, "queued"))[0]
            assert notice["leave_message"] is True and notice["back_at"] == int(at(9, 9) * 1000)
            assert notice["eta_s"] == 13 * 3600 and "明天 09:00" in notice["text"]
            assert notice["position"] == 1  # ahead of the conversation queued during the day

            now[0] = at(9, 9)
            async with connect(gw.url, token("a1", "agent"), resume={}) as agent:
                await agent.ok("status", status="online", max=1)
                assert (await agent.next("assigned"))["conv"]["id"] == left


async def test_after_hours_the_bot_says_when_agents_are_back(start_gateway, tmp_path):
    gw = await start_gateway(routing="on")  # the built-in bot
    gw.node.workspace.clock = lambda: at(8, 20)
    with trio.fail_after(20):
        async with client(gw, await new_key(gw)) as admin:
            await admin.put("/v1/business-hours", json=WEEKDAYS)
            problem(await admin.put("/v1/business-hours", json={**WEEKDAYS, "open": "19:00"}), 422, "bad_request")
            async with client(gw, await new_key(gw, scopes=("read",))) as reader:
                problem(await reader.put("/v1/business-hours", json=WEEKDAYS), 403, "forbidden")
        async with connect(gw.url, token("u1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.next("msg", conv=conv, role="bot")  # the greeting
            away = (await shopper.next("msg", conv=conv, role="bot"))["body"]["text"]
            assert "明天 09:00" in away and "留言" in away
        async with client(gw, await new_key(gw)) as admin:
            assert (await admin.request("DELETE", "/v1/business-hours")).json() == {"hours": None, "open_now": True, "back_at": None}
