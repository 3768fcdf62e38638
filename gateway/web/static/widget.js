// Kefu's chat widget: the one script a shop adds to its pages (docs/chat.md, "The widget: one
// script tag"):
//
//   <script src="https://kefu.example.com/chat/widget.js" data-token-url="/api/kefu-token"
//           data-product="coat-blue" async></script>
//
// It draws a "联系客服" launcher with an unread badge and a panel that frames the chat (/chat/ beside
// this file), both in a shadow root so the shop's styles and the widget's never meet. The chat needs
// a shopper's token, which only the shop's backend can mint: the widget asks the shop's own
// endpoint (data-token-url) when the shopper first opens it, and again whenever the chat says its
// token nears its end (kefu:token-expiring, renewal.js). The chat tells it when it is live, how many
// messages the shopper has not seen, and that Escape was pressed in it (embedder.js, chat.js).
//
// A classic script, not a module: it runs on the shop's page, which should not need to load
// modules from the gateway. Nothing it does may throw on the shop's page: a failure is a line in the
// panel (and a console warning for the shop's developers).

(function () {
  "use strict";

  const script = document.currentScript;
  if (!script || !script.src || (window.Kefu && window.Kefu.loaded)) return; // not a <script src>, or loaded twice
  // Calls the shop's page made before this script arrived (it loads async), through the stub
  // docs/chat.md gives: Kefu("setProduct", "coat-red") pushes its arguments to Kefu.q.
  const queued = (typeof window.Kefu === "function" && Array.isArray(window.Kefu.q)) ? window.Kefu.q.slice() : [];

  const WORDS = {
    zh: {
      launcher: "联系客服",
      unread: "{n} 条新消息",
      title: "在线客服",
      close: "关闭",
      connecting: "正在连接客服…",
      failed: "暂时无法连接客服，请稍后再试",
    },
    en: {
      launcher: "Contact us",
      unread: "{n} new messages",
      title: "Customer service",
      close: "Close",
      connecting: "Connecting…",
      failed: "Customer service is unavailable right now. Please try again later.",
    },
  };
  const LANG = (navigator.language || "zh").toLowerCase().startsWith("en") ? "en" : "zh";
  const say = (key, n) => WORDS[LANG][key].replace("{n}", String(n));

  const GATEWAY = new URL(script.src, location.href).origin; // the chat's origin: the only one heard or posted to
  const CHAT_URL = new URL("./", script.src).href; // /chat/, beside this file
  const TOKEN_URL = script.dataset.tokenUrl || "";
  const STATE_KEY = "kefu.widget"; // the shop's sessionStorage: open or not, and whether the chat was loaded

  const widget = {
    open: false,
    started: false, // a token came once in this tab: later pages load the chat at once, for the badge
    product: script.dataset.product || "",
    unread: 0,
    listeners: [], // onUnread callbacks
    frame: null, // the chat's iframe, once a token came
    loading: false, // a token is being fetched for the first load
    renewing: false, // a token is being fetched for the chat's kefu:token-expiring
    ui: null, // the shadow root's elements, once mounted
  };

  // ---- the tab's memory: the panel stays open (or closed) across the shop's pages ---------------

  function recall() {
    try {
      const found = JSON.parse(sessionStorage.getItem(STATE_KEY) || "{}");
      widget.open = found.open === true;
      widget.started = found.started === true;
    } catch {
      // storage blocked or garbage: start closed
    }
  }

  function remember() {
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify({ open: widget.open, started: widget.started }));
    } catch {
      // storage blocked: the panel forgets, nothing else changes
    }
  }

  // ---- the shop's token endpoint --------------------------------------------------------------

  /** A shopper's token from the shop's backend: POST data-token-url with the shop's cookies,
   * answered with JSON {"token": "…"}. */
  async function fetchToken() {
    if (!TOKEN_URL) throw new Error("the widget's <script> has no data-token-url");
    const answer = await fetch(TOKEN_URL, { method: "POST", credentials: "include", headers: { accept: "application/json" } });
    if (!answer.ok) throw new Error(`${TOKEN_URL} answered ${answer.status}`);
    let found;
    try {
      found = await answer.json();
    } catch {
      throw new Error(`${TOKEN_URL} did not answer JSON`);
    }
    if (!found || typeof found.token !== "string" || !found.token) throw new Error(`${TOKEN_URL} answered no "token"`);
    return found.token;
  }

  // ---- the chat -------------------------------------------------------------------------------

  /** Fetch a token and frame the chat with it (once; again after a failure). */
  function loadChat() {
    if (widget.frame || widget.loading || !widget.ui) return;
    widget.loading = true;
    status(say("connecting"));
    fetchToken().then(
      (token) => {
        widget.loading = false;
        const params = new URLSearchParams({ token });
        if (widget.product) params.set("product", widget.product);
        if (!widget.open) params.set("shown", "0"); // loaded for the badge: nothing is seen yet
        const frame = document.createElement("iframe");
        frame.title = say("title");
        frame.allow = "microphone; geolocation"; // the chat's voice message and location buttons
        frame.addEventListener("load", () => status(""));
        frame.src = `${CHAT_URL}#${params}`;
        widget.frame = frame;
        widget.ui.panel.append(frame);
        widget.started = true;
        remember();
      },
      (err) => {
        widget.loading = false;
        status(say("failed"), true);
        console.warn("kefu widget: no token for the chat:", err.message);
      },
    );
  }

  /** Post to the chat, at the gateway's origin only (a message to any other is dropped). */
  function tellChat(message) {
    if (widget.frame && widget.frame.contentWindow) widget.frame.contentWindow.postMessage(message, GATEWAY);
  }

  function renewToken() {
    if (widget.renewing) return;
    widget.renewing = true;
    fetchToken().then(
      (token) => {
        widget.renewing = false;
        tellChat({ type: "kefu:token", token });
      },
      (err) => {
        widget.renewing = false; // the chat asks again in 30 s
        console.warn("kefu widget: no new token for the chat:", err.message);
      },
    );
  }

  function heard(event) {
    if (!widget.frame || event.source !== widget.frame.contentWindow || event.origin !== GATEWAY) return;
    const data = event.data;
    if (!data || typeof data !== "object") return;
    switch (data.type) {
      case "kefu:ready": // the chat listens now: say where it stands
        tellChat({ type: "kefu:shown", shown: widget.open });
        tellChat({ type: "kefu:product", product: widget.product });
        return;
      case "kefu:unread":
        return setUnread(data.count);
      case "kefu:token-expiring":
        return renewToken();
      case "kefu:token-refused":
        return console.warn(`kefu widget: the chat refused the new token (${data.code})`);
      case "kefu:close":
        return close();
      default:
        return undefined;
    }
  }

  // ---- what the shopper sees ------------------------------------------------------------------

  const STYLE = `
    :host { all: initial !important; }
    .launcher, .panel { font: 14px/1.4 -apple-system, "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif; box-sizing: border-box; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 56px; height: 56px; padding: 0; border: none; border-radius: 50%;
      background: #ff5000; color: #fff; cursor: pointer; box-shadow: 0 4px 14px rgba(0, 0, 0, .25); display: flex; align-items: center; justify-content: center; }
    .launcher:focus-visible { outline: 3px solid #1f2329; outline-offset: 3px; }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .badge { position: absolute; top: -4px; right: -4px; min-width: 20px; height: 20px; padding: 0 6px; box-sizing: border-box; border-radius: 10px;
      background: #d4380d; color: #fff; font-size: 12px; font-weight: 600; line-height: 20px; text-align: center; }
    .panel { position: fixed; right: 20px; bottom: 88px; z-index: 2147483000; width: 380px; height: min(600px, calc(100vh - 108px));
      display: flex; flex-direction: column; overflow: hidden; background: #f5f6f7; color: #1f2329; border-radius: 12px; box-shadow: 0 8px 30px rgba(0, 0, 0, .25); }
    .panel header { display: flex; align-items: center; height: 40px; padding: 0 4px 0 14px; background: #ff5000; color: #fff; }
    .panel .title { flex: 1; font-weight: 600; }
    .close { width: 32px; height: 32px; padding: 0; border: none; border-radius: 6px; background: none; color: inherit; font-size: 22px; line-height: 1; cursor: pointer; }
    .close:focus-visible { outline: 2px solid #fff; }
    .status { margin: 0; padding: 10px 14px; }
    .status.failed { color: #d4380d; background: #fff1f0; }
    iframe { flex: 1; width: 100%; border: 0; }
    [hidden] { display: none !important; }
    @media (max-width: 480px) { .panel { inset: 0; width: auto; height: auto; border-radius: 0; } }
  `;

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  /** A speech bubble, drawn without markup strings (a shop's Trusted Types policy forbids those). */
  function bubble() {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z");
    svg.append(path);
    return svg;
  }

  function style(root) {
    try {
      const sheet = new CSSStyleSheet(); // not an inline <style>: a shop's CSP may forbid those
      sheet.replaceSync(STYLE);
      root.adoptedStyleSheets = [sheet];
    } catch {
      root.append(el("style", {}, STYLE));
    }
  }

  function mount() {
    const host = document.createElement("kefu-widget");
    const root = host.attachShadow({ mode: "open" });
    style(root);
    const badge = el("span", { class: "badge", "aria-hidden": "true" });
    const launcher = el("button", { type: "button", class: "launcher", "aria-controls": "panel" }, bubble(), badge);
    const closer = el("button", { type: "button", class: "close", "aria-label": say("close"), title: say("close") }, "×");
    const line = el("p", { class: "status", role: "status" });
    const panel = el("section", { id: "panel", class: "panel", role: "dialog", "aria-label": say("title") },
      el("header", {}, el("span", { class: "title" }, say("title")), closer), line);
    launcher.addEventListener("click", () => (widget.open ? close() : open()));
    closer.addEventListener("click", () => close());
    root.append(launcher, panel);
    widget.ui = { host, root, launcher, badge, panel, line };
    document.body.append(host);
    document.addEventListener("keydown", (event) => {
      // Escape while the focus is in the widget or nowhere in particular; in the chat, the chat says so (kefu:close)
      const focused = document.activeElement;
      if (event.key === "Escape" && widget.open && (!focused || focused === host || focused === document.body)) close();
    });
    window.addEventListener("message", heard);
    show();
    if (widget.open || widget.started) loadChat();
  }

  function status(text, failed = false) {
    if (!widget.ui) return;
    widget.ui.line.textContent = text;
    widget.ui.line.hidden = !text;
    widget.ui.line.classList.toggle("failed", failed);
  }

  function show() {
    if (!widget.ui) return;
    const { launcher, badge, panel } = widget.ui;
    panel.hidden = !widget.open;
    launcher.setAttribute("aria-expanded", String(widget.open));
    launcher.setAttribute("aria-label", widget.unread ? `${say("launcher")}，${say("unread", widget.unread)}` : say("launcher"));
    badge.hidden = widget.unread === 0;
    badge.textContent = widget.unread > 99 ? "99+" : String(widget.unread);
  }

  function setUnread(count) {
    const unread = Number.isInteger(count) && count > 0 ? count : 0;
    if (unread === widget.unread) return;
    widget.unread = unread;
    show();
    for (const callback of widget.listeners.slice()) report(callback);
  }

  function report(callback) {
    try {
      callback(widget.unread);
    } catch (err) {
      console.error("kefu widget: an onUnread callback failed:", err);
    }
  }

  // ---- the shop's API: window.Kefu --------------------------------------------------------------

  function open() {
    widget.open = true;
    remember();
    show();
    if (!widget.frame) loadChat(); // the first time, or again after a failure
    tellChat({ type: "kefu:shown", shown: true });
  }

  function close() {
    widget.open = false;
    remember();
    if (widget.ui && widget.ui.panel.contains(widget.ui.root.activeElement)) widget.ui.launcher.focus(); // not lost in a hidden panel
    show();
    tellChat({ type: "kefu:shown", shown: false });
  }

  /** The product on screen now (a shop whose pages change without loading): the chat opens its
   * next conversation with it; one already open keeps its own. */
  function setProduct(id) {
    widget.product = id == null ? "" : String(id);
    tellChat({ type: "kefu:product", product: widget.product });
  }

  /** `callback(count)` now and whenever the number of messages the shopper has not seen changes;
   * returns what stops it. */
  function onUnread(callback) {
    if (typeof callback !== "function") throw new TypeError("Kefu.onUnread takes a function");
    widget.listeners.push(callback);
    report(callback);
    return () => {
      widget.listeners = widget.listeners.filter((found) => found !== callback);
    };
  }

  const api = { open, close, setProduct, onUnread };

  /** `Kefu("open")`, as the stub is called, and `Kefu.open()` alike. */
  function Kefu(name, ...args) {
    if (!Object.prototype.hasOwnProperty.call(api, name)) {
      console.warn(`kefu widget: no such call: ${String(name)}`);
      return undefined;
    }
    return api[name](...args);
  }

  window.Kefu = Object.freeze(Object.assign(Kefu, api, { loaded: true }));

  function replay() {
    for (const args of queued) {
      try {
        Kefu(...args);
      } catch (err) {
        console.warn("kefu widget: a queued call failed:", err);
      }
    }
  }

  recall();
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => {
      mount();
      replay();
    }, { once: true });
  } else {
    mount();
    replay();
  }
})();
