"""The widget a shop adds with one script tag (widget.js), on a shop's site of its own: the launcher,
the chat it opens with a token from the shop's endpoint, the unread badge, Escape, a new token
before the old one ends, and a token endpoint that fails."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from .conftest import GatewayProcess, Peer, Shop, shop_site

pytestmark = pytest.mark.processes  # a gateway process and a browser: once, not again in the pure-Python pass

expect.set_options(timeout=15_000)

SHOPPER = "v-widget"
WIDGET_ORANGE = "rgb(255, 80, 0)"


class TokenEndpoint:
    """The shop's ``POST /api/kefu-token``: its backend mints the browsing shopper a token through
    the gateway's REST API with the shop's admin key (``Shop.token``). The first token lasts
    ``first_ttl_s``; ``failure`` (status, body) is answered instead while it is set."""

    def __init__(self, gateway: Shop | None, first_ttl_s: int = 3600) -> None:
        self.gateway = gateway
        self.first_ttl_s = first_ttl_s
        self.minted: list[str] = []
        self.failure: tuple[int, str] | None = None

    def __call__(self) -> tuple[int, str]:
        if self.failure is not None:
            return self.failure
        ttl_s = self.first_ttl_s if not self.minted else 3600
        minted = self.gateway.token(SHOPPER, "shopper", channel="web", name="王女士", ttl_s=ttl_s)
        self.minted.append(minted)
        return 200, json.dumps({"token": minted})


def shop_page(gateway_url: str) -> str:
    """A product page with the snippet, whose own styles would hide or repaint the widget's buttons
    if they reached them, and which shows what ``Kefu.onUnread`` says."""
    return f"""<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>蓝色羊毛外套</title>
<style>button {{ background: rgb(0, 255, 0) !important; }} .launcher, .panel, .badge {{ display: none !important; }}</style>
<h1>蓝色羊毛外套</h1>
<p>未读：<output id="unread"></output></p>
<script src="{gateway_url}/chat/widget.js" data-token-url="/api/kefu-token" data-product="coat-blue" async></script>
<script>window.addEventListener("load", () => Kefu.onUnread((n) => (document.getElementById("unread").textContent = String(n))));</script>
"""


class Widget:
    """The widget's parts as the shopper finds them on the shop's page."""

    def __init__(self, page) -> None:
        self.page = page
        self.launcher = page.get_by_role("button", name=re.compile("^联系客服"))
        self.panel = page.get_by_role("dialog", name="在线客服")
        self.closer = self.panel.get_by_role("button", name="关闭")
        self.status = self.panel.get_by_role("status")
        self.badge = page.locator("kefu-widget .badge")
        self.chat = page.frame_locator("kefu-widget iframe")

    def chat_frame(self):
        """The chat's frame, to read its sessionStorage."""
        return self.page.locator("kefu-widget iframe").element_handle().content_frame()


def read_receipt(agent: Peer, conv: str) -> int:
    """The shopper's read receipt, as the conversation's history states it."""
    receipts = agent.request("history", conv=conv)["receipts"]
    return max((r["seq"] for r in receipts if r["user"] == SHOPPER and r["kind"] == "read"), default=0)


def test_a_shopper_chats_from_the_widget_and_sees_what_came_while_it_was_closed(gateway, page):
    tokens = TokenEndpoint(gateway, first_ttl_s=60)  # the chat asks for the next one at once: under two minutes left
    agent = Peer(gateway, "wangli", "agent", name="王丽")
    agent.ok("status", status="online")
    with shop_site(shop_page(gateway.http_url), {"/api/kefu-token": tokens}) as shop_url:
        page.goto(shop_url)
        widget = Widget(page)
        expect(widget.launcher).to_be_visible()  # the shop's `.launcher {display: none}` does not reach it
        assert widget.launcher.evaluate("(b) => getComputedStyle(b).backgroundColor") == WIDGET_ORANGE
        expect(widget.panel).to_be_hidden()
        assert tokens.minted == []  # no token before the shopper opens it

        widget.launcher.click()
        expect(widget.panel).to_be_visible()
        expect(widget.launcher).to_have_attribute("aria-expanded", "true")
        expect(widget.chat.locator("#who")).to_have_text("王女士")
        frame = widget.chat_frame()
        # the first token nears its end: the widget fetched another from the shop and the chat took it
        frame.wait_for_function("(first) => sessionStorage.getItem('kefu.chat.token') !== first", arg=tokens.minted[0])
        assert frame.evaluate("sessionStorage.getItem('kefu.chat.token')") == tokens.minted[1]
        expect(widget.chat.locator("#expiry")).to_be_hidden()

        # the product on the shop's page, then the one a single-page shop says it moved to
        assert frame.evaluate("sessionStorage.getItem('kefu.chat.product')") == "coat-blue"
        page.evaluate("Kefu.setProduct('coat-red')")
        frame.wait_for_function("sessionStorage.getItem('kefu.chat.product') === 'coat-red'")

        # the chat goes on with the new token: a person, and the shopper's message reaches them
        widget.chat.locator("#human").click()
        conv = agent.next("assigned", timeout=20)["conv"]["id"]
        widget.chat.locator("#text").fill("我想问一下尺码")
        widget.chat.locator("#text").press("Enter")
        assert agent.next("msg", conv=conv, role="shopper", timeout=20)["body"]["text"] == "我想问一下尺码"

        # closed, the agent's answer is unread: the badge, its label and the shop's callback say 1
        widget.closer.click()
        expect(widget.panel).to_be_hidden()
        reply = agent.ok("send", conv=conv, cmid="r1", body={"kind": "text", "text": "您好，M 码适合 160-165 cm"})["seq"]
        expect(widget.badge).to_have_text("1")
        expect(widget.launcher).to_have_attribute("aria-label", "联系客服，1 条新消息")
        expect(page.locator("#unread")).to_have_text("1")
        assert read_receipt(agent, conv) < reply  # no 已读 for what the shopper has not seen

        # opened, it is seen: the badge goes and the agent gets the read receipt
        widget.launcher.click()
        expect(widget.chat.locator("#message-list li.agent").last).to_contain_text("M 码")
        expect(widget.badge).to_be_hidden()
        expect(page.locator("#unread")).to_have_text("0")
        while agent.next("receipt", conv=conv, kind="read", user=SHOPPER)["seq"] < reply:
            pass

        # Escape closes it from inside the chat and from the launcher; the keyboard opens it
        widget.chat.locator("#text").click()
        widget.chat.locator("#text").press("Escape")
        expect(widget.panel).to_be_hidden()
        expect(widget.launcher).to_be_focused()
        page.keyboard.press("Enter")
        expect(widget.panel).to_be_visible()
        page.keyboard.press("Escape")
        expect(widget.panel).to_be_hidden()

        # the shop's next page: still closed, the chat loaded for the badge, which counts what comes
        page.goto(shop_url)
        expect(widget.launcher).to_be_visible()
        expect(widget.panel).to_be_hidden()
        later = agent.ok("send", conv=conv, cmid="r2", body={"kind": "text", "text": "还有其他问题吗？"})["seq"]
        expect(widget.badge).to_have_text("1")
        assert read_receipt(agent, conv) < later
        widget.launcher.click()
        expect(widget.badge).to_be_hidden()
        page.goto(shop_url)  # and open stays open
        expect(widget.panel).to_be_visible()
        expect(widget.chat.locator("#message-list li.agent").last).to_contain_text("还有其他问题吗")
        assert widget.chat.locator("#message-list li.own .text").all_inner_texts() == ["我想问一下尺码"]

    with gateway.api() as api:
        assert api.get(f"/v1/conversations/{conv}/workspace").json()["product"] == "coat-red"
    agent.close()
    assert page.errors == []


@pytest.mark.parametrize("failure", [(500, '{"error": "down"}'), (200, "<html>sign in</html>"), (200, '{"access": "x"}')], ids=["500", "not-json", "no-token"])
def test_a_token_endpoint_that_fails_is_a_line_in_the_panel_and_opening_again_tries_again(gateway, page, failure):
    tokens = TokenEndpoint(gateway)
    tokens.failure = failure
    with shop_site(shop_page(gateway.http_url), {"/api/kefu-token": tokens}) as shop_url:
        page.goto(shop_url)
        widget = Widget(page)
        widget.launcher.click()
        expect(widget.status).to_have_text("暂时无法连接客服，请稍后再试")
        expect(widget.panel.locator("iframe")).to_have_count(0)
        tokens.failure = None
        widget.closer.click()
        widget.launcher.click()
        expect(widget.chat.locator("#who")).to_have_text("王女士")
        expect(widget.status).to_be_hidden()
    assert page.errors == []


def test_a_gateway_that_lists_the_shops_site_lets_it_frame_the_chat_and_hear_from_it(tmp_path, page):
    """With --allowed-origins, only the sites listed (and the gateway's own origin, where the chat's
    WebSocket comes from) may frame the chat, and the chat posts only to them."""
    process = GatewayProcess(tmp_path / "data")
    tokens = TokenEndpoint(None)  # the tenant comes once the gateway, which must know the shop's origin, has started
    with shop_site(shop_page(process.http_url), {"/api/kefu-token": tokens}) as shop_url:
        process.options = ("--allowed-origins", f"{shop_url.rstrip('/')},{process.http_url}")
        process.start()
        try:
            gateway = tokens.gateway = Shop(process)
            agent = Peer(gateway, "wangli", "agent", name="王丽")
            agent.ok("status", status="online")
            page.goto(shop_url)
            widget = Widget(page)
            widget.launcher.click()
            expect(widget.chat.locator("#who")).to_have_text("王女士")  # framed: the shop's origin is listed
            widget.chat.locator("#human").click()
            conv = agent.next("assigned", timeout=20)["conv"]["id"]
            widget.chat.locator("#text").click()
            widget.chat.locator("#text").press("Escape")  # kefu:close, posted to the shop's origin
            expect(widget.panel).to_be_hidden()
            agent.ok("send", conv=conv, cmid="r1", body={"kind": "text", "text": "您好"})
            expect(widget.badge).to_have_text("1")  # kefu:unread too
            agent.close()
        finally:
            process.stop()
    assert page.errors == []


def test_calls_made_before_the_script_arrives_are_kept_and_made_once_it_has(gateway, page):
    """The stub docs/chat.md gives queues `Kefu(name, ...)` calls while widget.js loads (async);
    the widget makes them in order once it is on the page, and then takes both call styles."""
    tokens = TokenEndpoint(gateway)
    stubbed = shop_page(gateway.http_url).replace(
        "<script src=",
        '<script>window.Kefu = window.Kefu || function () { (Kefu.q = Kefu.q || []).push(arguments); };\n'
        'Kefu("setProduct", "coat-green"); Kefu("onUnread", (n) => (document.title = "未读 " + n)); Kefu("open"); Kefu("nonsense");</script>\n'
        "<script src=",
        1,
    )
    with shop_site(stubbed, {"/api/kefu-token": tokens}) as shop_url:
        page.goto(shop_url)
        widget = Widget(page)
        expect(widget.panel).to_be_visible()  # opened by the queued call: nobody clicked
        expect(widget.chat.locator("#who")).to_have_text("王女士")
        frame = widget.chat_frame()
        frame.wait_for_function("sessionStorage.getItem('kefu.chat.product') === 'coat-green'")
        expect(page).to_have_title("未读 0")  # the queued onUnread was called
        page.evaluate("Kefu.close()")
        expect(widget.panel).to_be_hidden()
        page.evaluate("Kefu('open')")
        expect(widget.panel).to_be_visible()
        assert page.evaluate("Kefu.loaded") is True
    assert page.errors == []
