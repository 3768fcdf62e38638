"""Signatures, URL checks and event names (gateway.webhooks.payloads)."""

from __future__ import annotations

import json
import time

import msgpack
import pytest

from gateway.model import StoredMessage
from gateway.webhooks.payloads import EVENTS, WebhookError, check_events, check_url, message_event, payload, signature, verify


def test_a_signature_verifies_and_a_changed_body_or_an_old_timestamp_does_not():
    body = payload("evt_1", "message.created", "shop1", {"text": "你好"}, now_ms=1)
    now = int(time.time())
    header = signature("whsec_x", body, now)
    assert verify("whsec_x", body, header)
    assert not verify("whsec_y", body, header)
    assert not verify("whsec_x", body.replace("你好".encode(), "您好".encode()), header)
    assert not verify("whsec_x", body, signature("whsec_x", body, now - 301))
    assert not verify("whsec_x", body, "v1=abc")
    assert json.loads(body)["data"]["text"] == "你好"  # Chinese as is, not escaped


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "example.com/hook", "http://", "https://user:pass@example.com/hook",
    "http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook", "http://[::ffff:192.168.0.1]/hook", "http://0.0.0.0/hook", "http://example.com:notaport/",
    "https://example.com/a b", "https://example.com/a\r\nx-injected: 1",
])
def test_urls_that_are_refused(url):
    with pytest.raises(WebhookError):
        check_url(url, allow_private=False)


def test_urls_that_are_accepted():
    assert check_url("https://shop.example.com/kefu/events?x=1", allow_private=False)
    assert check_url("http://93.184.216.34/hook", allow_private=False)
    assert check_url("http://localhost:8080/hook", allow_private=False)
    assert check_url("https://商店.example/钩子", allow_private=False)  # sent punycoded and percent-encoded  # a name: checked when resolved, at delivery
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True)


def test_events_are_checked():
    assert check_events(["*"]) == ("*",)
    assert check_events(["message.created", "message.created", "conversation.resolved"]) == ("message.created", "conversation.resolved")
    with pytest.raises(WebhookError, match="message.deleted"):
        check_events(["message.deleted"])
    with pytest.raises(WebhookError):
        check_events([])
    assert "conversation.assigned" in EVENTS and "conversation.rated" in EVENTS


def stored(role: str, body: dict) -> StoredMessage:
    return StoredMessage("c1", 7, "m1", "u1", role, 1000, msgpack.packb(body))


def test_routings_system_events_are_conversation_events_and_everything_else_a_message():
    assert message_event(stored("system", {"kind": "event", "event": "assigned", "agent": "a1"}))[0] == "conversation.assigned"
    assert message_event(stored("system", {"kind": "event", "event": "something_new"}))[0] == "message.created"
    assert message_event(stored("system", {"kind": "text", "text": "维护通知"}))[0] == "message.created"
    name, message = message_event(stored("shopper", {"kind": "text", "text": "在吗"}))
    assert name == "message.created"
    assert message == {"conv": "c1", "seq": 7, "cmid": "m1", "from": "u1", "role": "shopper", "ts": 1000, "body": {"kind": "text", "text": "在吗"}}
    assert message_event(stored("shopper", {"kind": "file", "raw": b"\xe4\xbd\xa0"}))[1]["body"]["raw"] == "你"  # binary as text, as REST shows it
