"""A shopper chats from the shop's page: the bot first, its suggestions, a person, the survey."""

from __future__ import annotations

import io
import json
import re
import time

import jwt
import pytest
from PIL import Image
from playwright.sync_api import expect

from .conftest import Peer, shop_site, shown_seqs

pytestmark = pytest.mark.processes  # a gateway process and a browser: once, not again in the pure-Python pass

expect.set_options(timeout=15_000)


def open_chat(page, gateway, user: str, **fragment: str) -> None:
    """What the shop's page frames: the chat with a shopper's token (and the product on screen)."""
    minted = gateway.token(user, "shopper", channel="web", name="王女士")
    extra = "".join(f"&{key}={value}" for key, value in fragment.items())
    page.goto(f"{gateway.http_url}/chat/#token={minted}{extra}")
    expect(page.locator("#who")).to_have_text("王女士")


def test_a_shopper_asks_the_bot_then_a_person_and_rates_the_service(gateway, page):
    with gateway.api() as api:
        coat = {"title": "蓝色羊毛外套", "price": 899.0, "attributes": {"material": "80%羊毛 20%聚酯纤维"}, "sizes": ["M", "L"]}
        assert api.put("/v1/ingest/products/coat-blue", json=coat).status_code == 200
    agent = Peer(gateway, "wangli", "agent", name="王丽")
    agent.ok("status", status="online")

    open_chat(page, gateway, "v-77", product="coat-blue")
    assert page.url.endswith("/chat/")  # the token left the address bar
    expect(page.locator("#welcome")).to_be_visible()  # nothing opened until the shopper writes
    page.locator("#text").fill("这件是什么面料")
    page.locator("#text").press("Enter")
    # the bot answers from the product the chat was opened from
    expect(page.locator("#message-list li.bot").last).to_contain_text("羊毛", timeout=20_000)
    expect(page.locator("#message-list li.own .text")).to_have_text("这件是什么面料")

    # the bot's greeting offered questions as buttons; once it has answered, the last answer's show
    page.locator("#text").fill("你好")
    page.locator("#text").press("Enter")
    chips = page.locator("#chips button")
    expect(chips.first).to_be_visible(timeout=20_000)
    question = chips.first.inner_text()
    chips.first.click()
    expect(page.locator("#message-list li.own .text").last).to_have_text(question)

    # a person: the agent is offered the conversation and answers; the shopper sees their name
    page.locator("#human").click()
    offer = agent.next("assigned", timeout=20)
    conv = offer["conv"]["id"]
    expect(page.locator("#human")).to_be_hidden()
    agent.tell("typing", conv=conv, on=True)
    expect(page.locator("#typing")).to_be_visible()
    agent.ok("send", conv=conv, cmid="a1", body={"kind": "text", "text": "您好，我是王丽，这件外套是80%羊毛的"})
    reply = page.locator("#message-list li.agent").last
    expect(reply).to_contain_text("您好，我是王丽")
    expect(reply.locator(".meta")).to_contain_text("王丽")
    expect(page.locator("#typing")).to_be_hidden()
    # the page reads it: the agent learns so
    assert agent.next("receipt", conv=conv, kind="read", user="v-77")["seq"] >= 1

    # resolved: the survey, answered in place
    agent.ok("resolve", conv=conv)
    expect(page.locator("#survey-form")).to_be_visible()
    page.locator('#stars button[data-score="5"]').click()
    page.locator("#survey-comment").fill("很专业，谢谢")
    page.locator("#survey-send").click()
    expect(page.locator("#survey-thanks")).to_be_visible()
    rated = agent.next("rated", conv=conv)
    assert (rated["score"], rated["comment"]) == (5, "很专业，谢谢")
    with gateway.api() as api:
        workspace = api.get(f"/v1/conversations/{conv}/workspace").json()
        assert workspace["satisfaction"]["score"] == 5 and workspace["product"] == "coat-blue"

    # a reload finds the same conversation with everything said in it, once each
    page.reload()
    expect(page.locator("#message-list li.agent").last).to_contain_text("您好，我是王丽")
    expect(page.locator("#survey-thanks")).to_be_visible()
    with gateway.api() as api:
        stored = api.get(f"/v1/conversations/{conv}/messages").json()["messages"]
    assert shown_seqs(page) == [m["seq"] for m in stored]
    agent.close()
    assert page.errors == []


def test_a_shopper_sends_a_photo(gateway, page, tmp_path):
    agent = Peer(gateway, "wangli", "agent", name="王丽")
    agent.ok("status", status="online")
    open_chat(page, gateway, "v-78")
    page.locator("#human").click()  # straight to a person: the conversation opens with the request
    conv = agent.next("assigned", timeout=20)["conv"]["id"]
    picked = tmp_path / "颜色.jpg"
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 90, 200)).save(out, "JPEG")
    picked.write_bytes(out.getvalue())
    page.locator("#file").set_input_files(str(picked))
    got = agent.next("msg", conv=conv, role="shopper", timeout=20)
    assert got["body"]["kind"] == "image" and (got["body"]["w"], got["body"]["h"]) == (640, 480) and got["body"]["name"] == "颜色.jpg"
    thumb = page.locator("#message-list li.own img.thumb")
    expect(thumb).to_have_count(1)
    assert thumb.evaluate("(img) => img.decode().then(() => img.naturalWidth)") > 0
    agent.close()
    assert page.errors == []


def test_a_shopper_sends_a_voice_message_and_a_location(gateway, page):
    agent = Peer(gateway, "wangli", "agent", name="王丽")
    agent.ok("status", status="online")
    open_chat(page, gateway, "v-79")
    page.locator("#human").click()
    conv = agent.next("assigned", timeout=20)["conv"]["id"]

    page.locator("#voice").click()  # records from the (fake) microphone until pressed again
    expect(page.locator("#voice")).to_contain_text("停止并发送")
    page.wait_for_timeout(1600)
    page.locator("#voice").click()
    voice = agent.next("msg", conv=conv, role="shopper", timeout=20)["body"]
    assert voice["kind"] == "voice" and voice["type"] in ("video/webm", "audio/ogg"), voice  # (filetype names WebM video/webm)
    assert 1_000 <= voice["duration_ms"] <= 10_000, voice  # read from its packets: a recorded WebM states none
    expect(page.locator("#message-list li.own audio")).to_have_count(1)
    expect(page.locator("#message-list li.own .attachment")).to_contain_text(re.compile(r"\d+ 秒"))  # its duration, shown

    page.locator("#where").click()
    where = agent.next("msg", conv=conv, role="shopper", timeout=20)["body"]
    assert (where["kind"], round(where["lat"], 4), round(where["lng"], 4), where["name"]) == ("location", 31.2304, 121.4737, "我的位置")
    expect(page.locator("#message-list li.own .location")).to_contain_text("31.23040, 121.47370")
    agent.close()
    assert page.errors == []


def test_without_a_token_or_with_a_refused_one_the_chat_says_so(gateway, page):
    page.goto(f"{gateway.http_url}/chat/")
    expect(page.locator("#problem")).to_contain_text("联系客服")
    expect(page.locator("#composer")).to_be_hidden()
    page.goto("about:blank")  # a new document: only the fragment would differ otherwise
    page.goto(f"{gateway.http_url}/chat/#token=expired.or.forged")
    expect(page.locator("#problem")).to_contain_text("token_invalid")
    expect(page.locator("#composer")).to_be_hidden()
    assert page.errors == []


def test_the_shops_page_hands_the_chat_a_new_token_before_the_old_one_ends(gateway, page):
    short = gateway.token("v-88", "shopper", channel="web", name="李先生", ttl_s=60)  # asks at once: under two minutes left
    someone_else = gateway.token("v-99", "shopper", channel="web")
    fresh = gateway.token("v-88", "shopper", channel="web", name="李先生", ttl_s=7200)
    fresh_expiry = jwt.decode(fresh, options={"verify_signature": False})["exp"]
    # The shop's page (at an origin of its own: another port) frames the chat and answers its requests for a
    # token: first, wrongly, with another shopper's, then with the shopper's own.
    shop_page = f"""<!doctype html><meta charset="utf-8"><title>shop</title>
<iframe id="chat" src="{gateway.http_url}/chat/#token={short}" width="600" height="700"></iframe><ol id="heard"></ol>
<script>
const answers = {json.dumps([someone_else, fresh])};
window.addEventListener("message", (event) => {{
  if (event.origin !== "{gateway.http_url}" || !event.data.type.startsWith("kefu:token")) return;  // (not kefu:ready, kefu:unread)
  const item = document.createElement("li");
  item.textContent = JSON.stringify(event.data);
  document.getElementById("heard").append(item);
  if (event.data.type === "kefu:token-expiring" || event.data.type === "kefu:token-refused") {{
    const next = answers.shift();
    if (next) event.source.postMessage({{type: "kefu:token", token: next}}, event.origin);
  }}
}});
</script>"""
    with shop_site(shop_page) as shop_url:
        page.goto(shop_url)
        renewed_chat(page, gateway, fresh_expiry)


def renewed_chat(page, gateway, fresh_expiry: int) -> None:
    heard = page.locator("#heard li")
    expect(heard).to_have_count(3)
    said = [json.loads(text) for text in heard.all_inner_texts()]
    assert said[0]["type"] == "kefu:token-expiring" and said[0]["expires_at"] <= time.time() + 60
    assert said[1] == {"type": "kefu:token-refused", "code": "already_authenticated", "message": "this connection is authenticated as another user"}
    assert said[2] == {"type": "kefu:token-renewed", "expires_at": fresh_expiry}  # the server's answer: the new token's expiry
    chat = page.frame_locator("#chat")
    expect(chat.locator("#who")).to_have_text("李先生")
    expect(chat.locator("#expiry")).to_be_hidden()
    # the chat goes on with the new token: a message is stored
    chat.locator("#text").fill("新的令牌还能发消息吗")
    chat.locator("#text").press("Enter")
    expect(chat.locator("#message-list li.own[data-seq] .text")).to_have_text("新的令牌还能发消息吗")  # acked: stored
    with gateway.api() as api:
        (conv,) = api.get("/v1/conversations").json()["conversations"]  # the test's tenant has this one
        stored = api.get(f"/v1/conversations/{conv['id']}/messages").json()["messages"]
    assert [m["body"]["text"] for m in stored if m["from"] == "v-88"] == ["新的令牌还能发消息吗"]
    assert page.errors == []


def test_a_chat_no_page_frames_warns_before_its_token_ends(gateway, page):
    short = gateway.token("v-89", "shopper", channel="web", name="赵女士", ttl_s=60)
    page.goto(f"{gateway.http_url}/chat/#token={short}")
    expect(page.locator("#expiry")).to_contain_text("秒内结束")
    assert page.errors == []
