"""An agent works a shopper's conversation in the browser console, over a real gateway process."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from PIL import Image
from playwright.sync_api import expect

from ..support import SECRET
from .conftest import Peer, shown_seqs

pytestmark = pytest.mark.processes  # a gateway process and a browser: once, not again in the pure-Python pass

expect.set_options(timeout=15_000)

HOSTILE = '<img src=x onerror="window.pwned=1">转人工 <b>粗体</b>'


def console_link(gateway, user: str = "wangli", name: str = "王丽", role: str = "agent", ttl_s: int = 24 * 3600) -> str:
    """What `kefu token … --page` prints: the console's address with the token in its fragment."""
    args = [sys.executable, "-m", "gateway", "token", "--jwt-secret", SECRET, "--tenant", gateway.tenant, "--user", user, "--role", role, "--name", name,
            "--ttl", str(ttl_s), "--page", gateway.http_url]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def sign_in(page, gateway, user: str = "wangli", name: str = "王丽", role: str = "agent", ttl_s: int = 24 * 3600) -> None:
    page.goto(console_link(gateway, user, name, role, ttl_s))
    expect(page.locator("#link")).to_have_text("已连接")


def open_with_human(shopper: Peer, text: str = "转人工", **fields) -> str:
    conv = shopper.ok("open", subject="外套咨询", **fields)["conv"]["id"]
    shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": text})
    return conv


def test_an_agent_serves_a_known_customer_with_a_quick_reply(gateway, page):
    with gateway.api() as api:
        assert api.put("/v1/ingest/customers/c42", json={"name": "王女士", "tier": "金卡", "tags": ["老客户"]}).status_code == 200
        order = {"customer": "c42", "items": [{"product": "coat-blue", "title": "蓝色羊毛外套", "quantity": 1}], "status": "shipped", "created_at": 1_760_000_000_000}
        assert api.put("/v1/ingest/orders/A1002", json=order).status_code == 200
        reply = {"shortcut": "/hi", "title": "问候", "text": "{customer.name}，您好！订单 {order.id} 已{order.status}。"}
        assert api.put("/v1/quick-replies", json=reply).status_code == 200

    sign_in(page, gateway)
    expect(page.locator("#status")).to_have_value("online")  # signing in makes the agent available
    expect(page.locator("#load")).to_have_text("接待中 0/5")
    assert page.url.endswith("/console/")  # the token left the address bar

    shopper = Peer(gateway, "u42", name="王女士", customer="c42")
    conv = open_with_human(shopper, HOSTILE)
    shopper.event(conv, "assigned")

    # the conversation arrives in the inbox and opens with the customer and the bot's handoff
    row = page.locator(f'#inbox li[data-conv="{conv}"]')
    expect(row).to_contain_text("王女士")
    expect(page.locator("#thread-title")).to_contain_text("王女士")
    expect(page.locator("#customer")).to_contain_text("金卡")
    expect(page.locator("#customer")).to_contain_text("A1002")
    expect(page.locator("#customer")).to_contain_text("asked_for_human")
    expect(page.locator("#load")).to_have_text("接待中 1/5")
    for placeholder in ("null", "undefined", "NaN"):
        expect(page.locator("#customer")).not_to_contain_text(placeholder)

    # what the shopper wrote is shown as text: no markup from it, no script from it
    first = page.locator('#message-list li.shopper .text')
    expect(first).to_have_text(HOSTILE)
    assert page.locator("#message-list img").count() == 0
    assert page.evaluate("window.pwned") is None

    # a quick reply: "/" searches, Enter picks, the variables are filled from the context
    page.locator("#text").fill("/h")
    expect(page.locator("#replies li")).to_have_count(1)
    page.locator("#text").press("Enter")
    expect(page.locator("#text")).to_have_value("王女士，您好！订单 A1002 已shipped。")
    page.locator("#text").press("Enter")
    got = shopper.next("msg", conv=conv, role="agent")
    assert got["body"] == {"kind": "text", "text": "王女士，您好！订单 A1002 已shipped。"} and got["from"] == "wangli"
    expect(page.locator("#message-list li.own .text")).to_have_text("王女士，您好！订单 A1002 已shipped。")
    expect(page.locator("#message-list li.pending")).to_have_count(0)  # acked: durable

    # the shopper reads it: the console says so
    shopper.request("receipt", conv=conv, kind="read", seq=got["seq"])
    expect(page.locator("#message-list li.own .read")).to_have_text("已读")

    # a private note and a tag: stored, and the note never reaches the shopper
    page.locator("#note-input").fill("尺码偏小，推荐 L 码")
    page.locator("#note-form button").click()
    expect(page.locator("#notes")).to_contain_text("尺码偏小，推荐 L 码")
    page.locator("#tag-input").fill("尺码")
    page.locator("#tag-input").press("Enter")
    expect(page.locator("#tags")).to_contain_text("尺码")
    with gateway.api() as api:
        workspace = api.get(f"/v1/conversations/{conv}/workspace").json()
        assert workspace["tags"] == ["尺码"]
        assert [n["text"] for n in api.get(f"/v1/conversations/{conv}/notes").json()["notes"]] == ["尺码偏小，推荐 L 码"]

    # a reload keeps the session (the tab's token) and shows the same desk from the server's state
    page.reload()
    expect(page.locator("#link")).to_have_text("已连接")
    expect(row).to_contain_text("王女士")
    expect(page.locator("#message-list li.own .text")).to_have_text("王女士，您好！订单 A1002 已shipped。")
    expect(page.locator("#notes")).to_contain_text("尺码偏小，推荐 L 码")
    expect(page.locator("#tags")).to_contain_text("尺码")

    # resolve: the shopper is told, and the survey follows
    page.locator("#resolve").click()
    shopper.event(conv, "resolved")
    shopper.event(conv, "survey")
    expect(page.locator("#thread-stage")).to_have_text("已解决")
    assert not [f for f in shopper.buffer if f.get("t") == "note"]
    shopper.close()
    assert page.errors == []


def photo(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def test_photos_both_ways_through_signed_urls(gateway, page, tmp_path):
    sign_in(page, gateway)
    shopper = Peer(gateway, "u7", name="小美")
    conv = open_with_human(shopper)
    shopper.event(conv, "assigned")
    expect(page.locator("#thread-title")).to_contain_text("小美")

    # the shopper's photo shows as its thumbnail, loaded through a signed URL under the page's policy
    sent = shopper.upload(conv, "image", "颜色.jpg", photo(800, 600))
    shopper.ok("send", conv=conv, cmid="p1", body={"kind": "image", "attachment": sent["id"]})
    thumb = page.locator("#message-list img.thumb")
    expect(thumb).to_have_count(1)
    expect(thumb).to_have_attribute("src", re.compile(r"^/v1/attachments/.+variant=thumbnail&expires=\d+&sig="))
    loaded = thumb.evaluate("(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    assert max(loaded) <= 320 and loaded[0] > loaded[1]  # a thumbnail, landscape as the photo
    expect(page.locator("#message-list .attachment")).to_contain_text("颜色.jpg")

    # the agent picks a file: it is uploaded with the agent's token and sent as an image message
    picked = tmp_path / "实拍.jpg"
    picked.write_bytes(photo(300, 400))
    page.locator("#file").set_input_files(str(picked))
    got = shopper.next("msg", conv=conv, role="agent")
    assert got["body"]["kind"] == "image" and (got["body"]["w"], got["body"]["h"]) == (300, 400) and got["body"]["name"] == "实拍.jpg"
    expect(page.locator("#message-list li.own img.thumb")).to_have_count(1)
    shopper.close()
    assert page.errors == []


@pytest.mark.timeout(150)  # two gateway starts and the console's reconnect backoff, on a loaded CI machine
def test_a_message_typed_while_the_gateway_restarts_is_stored_once_and_nothing_is_missed(own_gateway, page):
    gateway = own_gateway
    sign_in(page, gateway)
    shopper = Peer(gateway, "u8", name="小林")
    conv = open_with_human(shopper)
    shopper.event(conv, "assigned")
    expect(page.locator("#thread-title")).to_contain_text("小林")
    page.locator("#text").fill("在的，请稍等")
    page.locator("#text").press("Enter")
    shopper.next("msg", conv=conv, role="agent")

    gateway.stop()  # SIGTERM: clients are closed with 1012
    shopper.close()
    expect(page.locator("#link")).to_contain_text("已断开")
    page.locator("#text").fill("网络断了，这条在恢复后发出")
    page.locator("#text").press("Enter")
    expect(page.locator("#message-list li.pending")).to_have_count(1)

    gateway.start()
    expect(page.locator("#link")).to_have_text("已连接", timeout=30_000)
    expect(page.locator("#message-list li.pending")).to_have_count(0)

    back = Peer(gateway, "u8", name="小林")
    back.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "好的，谢谢"})
    expect(page.locator("#message-list")).to_contain_text("好的，谢谢")
    history = back.ok("history", conv=conv)["messages"]
    texts = [m["body"].get("text") for m in history]
    assert texts.count("网络断了，这条在恢复后发出") == 1 and texts.count("好的，谢谢") == 1
    # the console shows each stored message once, in order, with no gap
    assert shown_seqs(page) == [m["seq"] for m in history]
    back.close()
    assert page.errors == []


def test_a_refused_token_brings_back_the_form_with_its_code(gateway, page):
    page.goto(f"{gateway.http_url}/console/#token=not-a-token")
    expect(page.locator("#login-error")).to_contain_text("token_invalid")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('kefu.console.token')") is None

    # a shopper's token is valid but not for the desk
    page.locator("#login-token").fill(gateway.token("u9", "shopper"))
    page.locator("#login-form button").click()
    expect(page.locator("#login-error")).to_contain_text("客服和主管")

    # an agent's token pasted into the form signs in
    page.locator("#login-token").fill(gateway.token("li", "agent", name="李雷"))
    page.locator("#login-form button").click()
    expect(page.locator("#me")).to_contain_text("李雷")
    assert page.errors == []


def test_a_supervisor_sees_the_queues_and_the_agents(gateway, page):
    sign_in(page, gateway, user="boss", name="张主管", role="supervisor")
    page.locator("#status").select_option("away")  # not taking conversations: they queue
    expect(page.locator("#load")).to_contain_text("接待中")
    shopper = Peer(gateway, "u10", name="小周")
    conv = open_with_human(shopper)
    shopper.event(conv, "queued")
    page.locator("#tab-queues").click()
    expect(page.locator("#queues")).to_contain_text("u10")
    expect(page.locator("#queues table")).to_contain_text("张主管")
    expect(page.locator("#queues table")).to_contain_text("离开")

    expect(page.locator("#queues")).to_contain_text("全部进行中的会话")
    expect(page.locator(f'#queues li[data-conv="{conv}"]')).to_have_count(2)  # queued, and among all the open ones
    # the supervisor opens the queued conversation, joins it, answers and resolves it
    page.locator(f'#queues li[data-conv="{conv}"]').first.click()
    expect(page.locator('#message-list li.shopper .text').first).to_have_text("转人工")
    expect(page.locator("#text")).to_be_disabled()  # not a participant yet
    shopper.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "还要等多久？"})
    expect(page.locator("#message-list li.shopper .text").last).to_have_text("还要等多久？")  # followed before joining
    shopper.tell("typing", conv=conv, on=True)
    expect(page.locator("#typing")).to_be_visible()  # live, as its members hear it
    shopper.tell("typing", conv=conv, on=False)
    expect(page.locator("#typing")).to_be_hidden()
    page.locator("#join").click()
    assert shopper.next("joined", conv=conv, user="boss")["role"] == "supervisor"
    expect(page.locator("#join")).to_be_hidden()
    page.locator("#text").fill("我是主管，马上为您处理")
    page.locator("#text").press("Enter")
    said = shopper.next("msg", conv=conv, role="supervisor")
    assert said["body"]["text"] == "我是主管，马上为您处理" and said["from"] == "boss"
    expect(page.locator("#resolve")).to_be_disabled()  # queued: routing resolves only what an agent serves
    page.locator("#transfer").click()
    page.locator("#transfer-target").fill("nobody")
    page.locator("#transfer-form button[type=submit]").click()
    expect(page.locator("#thread-error")).to_contain_text("forbidden")  # the server's refusal, shown

    # the report, read with the supervisor's own token: the conversation and why it went to a person
    page.locator("#tab-reports").click()
    cards = page.locator("#report .card")
    expect(cards.first).to_contain_text("会话")
    expect(cards.first.locator("strong")).to_have_text("1")
    expect(page.locator("#report")).to_contain_text("asked_for_human")
    for placeholder in ("null", "undefined", "NaN"):  # every figure shown is one the report has
        expect(page.locator("#report")).not_to_contain_text(placeholder)
    page.locator("#report-period").select_option("1")  # today: the same conversation
    expect(cards.first.locator("strong")).to_have_text("1")
    expect(page.locator("#thread-body")).to_be_hidden()
    shopper.close()
    assert page.errors == []


def test_an_agent_keeps_quick_replies_and_uses_them(gateway, page):
    sign_in(page, gateway)
    expect(page.locator("#tab-settings")).to_be_hidden()  # the shop's settings are supervisors'
    page.locator("#tab-replies").click()
    page.locator("#reply-shortcut").fill("addr")  # the leading / is added
    page.locator("#reply-title").fill("门店地址")
    page.locator("#reply-text").fill("{customer.name}您好，门店在上海市黄浦区人民大道 120 号")
    page.locator("#reply-form button").click()
    mine = page.locator('#reply-list li[data-shortcut="/addr"]')
    expect(mine).to_contain_text("门店地址")
    with gateway.api() as api:  # stored as the agent's own
        assert [r["shortcut"] for r in api.get("/v1/quick-replies", params={"owner": "wangli"}).json()["replies"]] == ["/addr"]
    expect(page.locator("#reply-scope")).to_be_hidden()  # agents keep their own; the shop's are supervisors'

    # the shop's replies are listed too, but an agent cannot change them
    with gateway.api() as api:
        assert api.put("/v1/quick-replies", json={"shortcut": "/bye", "title": "结束语", "text": "感谢您的咨询"}).status_code == 200
    page.locator("#tab-inbox").click()
    page.locator("#tab-replies").click()
    shops = page.locator('#reply-list li[data-shortcut="/bye"]')
    expect(shops).to_contain_text("全店")
    expect(shops.locator("button")).to_have_count(0)

    shopper = Peer(gateway, "u11", name="小陈")
    conv = open_with_human(shopper)
    shopper.event(conv, "assigned")
    expect(page.locator("#thread-title")).to_contain_text("小陈")  # the new conversation takes the main view
    page.locator("#text").fill("/ad")
    expect(page.locator("#replies li")).to_have_count(1)
    page.locator("#replies li").click()
    expect(page.locator("#text")).to_have_value("{customer.name}您好，门店在上海市黄浦区人民大道 120 号")
    expect(page.locator("#missing")).to_contain_text("{customer.name}")  # no profile pushed: left for the agent
    page.locator("#text").fill("小陈您好，门店在上海市黄浦区人民大道 120 号")
    page.locator("#text").press("Enter")
    assert shopper.next("msg", conv=conv, role="agent")["body"]["text"] == "小陈您好，门店在上海市黄浦区人民大道 120 号"

    page.locator("#tab-replies").click()
    mine.get_by_role("button", name="删除").click()
    expect(mine).to_have_count(0)
    with gateway.api() as api:
        assert api.get("/v1/quick-replies", params={"owner": "wangli"}).json()["replies"] == []
    shopper.close()
    assert page.errors == []


def test_a_supervisor_manages_agents_hours_routing_and_the_bot_in_settings(gateway, page):
    """The Settings tab calls the REST API with the supervisor's own token: what it changes is what
    the shop's API key then reads, and the server's refusals are shown as it words them."""
    sign_in(page, gateway, user="boss", name="张主管", role="supervisor")
    page.locator("#tab-settings").click()
    expect(page.locator("#agents-empty")).to_be_visible()
    expect(page.locator("#thread-body")).to_be_hidden()

    # an agent added, refused twice (the server's 409 and its field error), changed, disabled
    page.locator("#agent-user").fill("li")
    page.locator("#agent-name").fill("李雷")
    page.locator("#agent-max").fill("2")
    page.locator("#agent-save").click()
    row = page.locator('#agent-table tr[data-user="li"]')
    expect(row).to_contain_text("李雷")
    expect(row.locator(".max")).to_have_text("2")
    page.locator("#agent-user").fill("li")
    page.locator("#agent-save").click()
    expect(page.locator("#agents-error")).to_contain_text("agent 'li' exists")
    page.locator("#agent-user").fill("wu")
    page.locator("#agent-groups").fill("vip")
    page.locator("#agent-save").click()
    expect(page.locator('#agent-form [data-field="groups"]')).to_have_text("unknown skill groups ['vip']")
    expect(page.locator("#agents-error")).to_be_hidden()
    row.locator("button.edit").click()
    expect(page.locator("#agent-user")).to_have_value("li")
    page.locator("#agent-max").fill("4")
    page.locator("#agent-save").click()
    expect(row.locator(".max")).to_have_text("4")
    expect(page.locator('#agent-form [data-field="groups"]')).to_have_text("")
    row.locator("button.toggle").click()
    expect(row.locator(".state")).to_have_text("已停用")
    with gateway.api() as api:
        li = api.get("/v1/agents/li").json()
        assert (li["name"], li["max_active"], li["disabled"]) == ("李雷", 4, True)
        assert [a["user"] for a in api.get("/v1/agents").json()["agents"]] == ["li"]

    # business hours: every day, all day, in Beijing's zone: at work now; a refusal worded by the server
    for day in page.locator("#hours-days input").all():
        day.check()
    page.locator("#hours-open").fill("19:00")
    page.locator("#hours-close").fill("09:00")
    page.locator("#hours-zone").select_option("480")
    page.locator("#hours-save").click()
    expect(page.locator("#hours-error")).to_contain_text("field `close` must be after `open`")
    page.locator("#hours-open").fill("00:00")
    page.locator("#hours-close").fill("24:00")
    page.locator("#hours-save").click()
    expect(page.locator("#hours-now")).to_have_text("现在是营业时间：客服在岗")
    expect(page.locator("#hours-error")).to_be_hidden()
    with gateway.api() as api:
        assert api.get("/v1/business-hours").json()["hours"] == {"utc_offset_min": 480, "days": [0, 1, 2, 3, 4, 5, 6], "open": "00:00", "close": "24:00"}

    # routing: the settings in force; a mistake refused naming the setting; "load again" puts them back
    expect(page.locator("#routing-source")).to_have_text("来源：默认")
    expect(page.locator("#routing-json")).to_have_value(re.compile('"strategy": "least_loaded"'))
    page.locator("#routing-json").fill('{"strategy": "fastest"}')
    page.locator("#routing-save").click()
    expect(page.locator("#routing-errors li")).to_have_text(re.compile(r"^field `strategy`: Input should be 'least_loaded', 'round_robin'"))
    page.locator("#routing-reset").click()
    expect(page.locator("#routing-errors li")).to_have_count(0)
    expect(page.locator("#routing-json")).to_have_value(re.compile('"strategy": "least_loaded"'))
    with gateway.api() as api:
        assert api.get("/v1/routing").json()["source"] == "default"  # the refused PUT changed nothing

    # the bot answers a Chinese question as it would a shopper
    expect(page.locator("#bot-source")).to_have_text("来源：默认")
    page.locator("#bot-question").fill("怎么退货")
    page.locator("#bot-try").click()
    expect(page.locator("#bot-answer .intent .value")).to_have_text("returns")
    expect(page.locator("#bot-answer .handoff .value")).to_have_text("否")
    expect(page.locator("#bot-answer blockquote")).not_to_be_empty()
    for placeholder in ("null", "undefined", "NaN"):
        expect(page.locator("#settings-view")).not_to_contain_text(placeholder)
    assert page.errors == []


# Notifications are recorded as the page makes them (an init script runs before the page's own and
# is not subject to its CSP): the browser's own would go to a desktop the test cannot see.
RECORD_NOTIFICATIONS = """
window.notified = [];
const Real = window.Notification;
class Recorded extends Real {
  constructor(title, options) { super(title, options); window.notified.push({ title, body: options.body, tag: options.tag }); }
}
Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
Recorded.requestPermission = (...args) => Real.requestPermission(...args);
window.Notification = Recorded;
"""


def test_an_agent_switches_alerts_on_and_hears_of_a_new_conversation_and_a_message_elsewhere(gateway, page):
    page.context.grant_permissions(["notifications"])
    page.add_init_script(RECORD_NOTIFICATIONS)
    sign_in(page, gateway, "zhouli", "周丽")
    alerts = page.locator("#alerts")
    expect(alerts).to_have_attribute("aria-pressed", "false")
    alerts.click()
    expect(alerts).to_have_attribute("aria-pressed", "true")
    notified = lambda: page.locator("body").evaluate("() => window.notified")  # noqa: E731

    first = Peer(gateway, "u61", name="钱女士")
    conv_a = open_with_human(first)
    expect(page.locator("#thread-title")).to_contain_text("钱女士")  # opened by itself: the agent is looking at it
    second = Peer(gateway, "u62", name="孙先生")
    conv_b = open_with_human(second)
    expect(page.locator(f'#inbox li[data-conv="{conv_b}"]')).to_be_visible()
    second.ok("send", conv=conv_b, cmid="q2", body={"kind": "text", "text": "还在吗？急"})
    second.ok("send", conv=conv_b, cmid="q3", body={"kind": "location", "lat": 31.23, "lng": 121.47, "name": "人民广场"})
    expect(page.locator(f'#inbox li[data-conv="{conv_b}"] .unread')).to_have_text("3")
    told = [n for n in notified() if n["tag"] == f"kefu-{conv_b}"]  # one tag a conversation: the newest replaces the last
    # The assignment and the messages may arrive in either order (the assignment waits up to
    # --context-wait-s for the customer's context; the agent is a member, hearing messages, before
    # it). Each names the customer as the desk knows them then: by name, or by id until it knows.
    assigned = [n for n in told if n["title"].startswith("新会话：")]
    assert [n["title"] for n in assigned] in (["新会话：孙先生"], ["新会话：u62"]), told
    said = [n for n in told if n not in assigned]
    assert [n["body"] for n in said] == ["还在吗？急", "[位置]"] and {n["title"] for n in said} <= {"孙先生", "u62"}, told
    assert page.locator("#expiry").is_hidden()  # a day's token: nothing to renew yet

    # switched off, and kept off in this browser: nothing more is told
    alerts.click()
    expect(alerts).to_have_attribute("aria-pressed", "false")
    before = len(notified())
    second.ok("send", conv=conv_b, cmid="q4", body={"kind": "text", "text": "人呢"})
    expect(page.locator(f'#inbox li[data-conv="{conv_b}"] .unread')).to_have_text("4")
    assert len(notified()) == before
    page.reload()
    expect(page.locator("#alerts")).to_have_attribute("aria-pressed", "false")
    first.close()
    second.close()
    assert conv_a != conv_b and page.errors == []


def test_a_sign_in_about_to_end_is_renewed_with_a_pasted_link(gateway, page):
    sign_in(page, gateway, "wuli", "吴丽", ttl_s=60)  # under two minutes: the page says so at once
    expect(page.locator("#expiry")).to_be_visible()
    expect(page.locator("#expiry-text")).to_contain_text("登录将在")
    # someone else's link is refused by the server; the agent's own is taken, and the desk goes on
    page.locator("#renew-token").fill(console_link(gateway, "zhengli", "郑丽"))
    page.locator("#renew-form button").click()
    expect(page.locator("#renew-error")).to_contain_text("already_authenticated")
    page.locator("#renew-token").fill(console_link(gateway, "wuli", "吴丽"))
    page.locator("#renew-form button").click()
    expect(page.locator("#expiry")).to_be_hidden()
    shopper = Peer(gateway, "u63", name="冯女士")
    conv = open_with_human(shopper)
    expect(page.locator("#thread-title")).to_contain_text("冯女士")
    page.locator("#text").fill("您好，我在")
    page.locator("#text").press("Enter")
    assert shopper.next("msg", conv=conv, role="agent", timeout=20)["body"]["text"] == "您好，我在"
    shopper.close()
    assert page.errors == []


def test_an_erasure_on_the_customers_request_empties_the_open_conversation_at_once(gateway, page):
    sign_in(page, gateway, "qianli", "钱丽")
    shopper = Peer(gateway, "u71", name="李女士", customer="c71")
    conv = open_with_human(shopper)
    expect(page.locator("#thread-title")).to_contain_text("李女士")
    shopper.ok("send", conv=conv, cmid="pii", body={"kind": "text", "text": "我的手机号是13800000000，地址是上海市人民广场1号"})
    expect(page.locator("#message-list li.shopper .text").last).to_contain_text("13800000000")
    page.locator("#note-input").fill("顾客说下午在家")
    page.locator("#note-form button").click()
    expect(page.locator("#notes")).to_contain_text("顾客说下午在家")
    with gateway.api() as api:
        erased = api.post("/v1/customers/c71/erase", json={"confirm": "c71"})
        assert erased.status_code == 200 and erased.json()["erased"]["conversations"] == 1, erased.text
    # the open conversation, as the agent sees it: no body and no note left, the seqs all there
    expect(page.locator("#message-list")).not_to_contain_text("13800000000")
    expect(page.locator("#message-list li.shopper").first).to_contain_text("内容已应顾客要求删除")
    expect(page.locator("#notes")).not_to_contain_text("顾客说下午在家")
    with gateway.api() as api:
        stored = api.get(f"/v1/conversations/{conv}/messages").json()["messages"]
    assert shown_seqs(page) == [m["seq"] for m in stored]
    shopper.close()
    assert page.errors == []
