// The agent console: the inbox, one conversation at a time, the customer beside it.
//
// Everything shown comes from kefu.v1 requests and pushed frames (docs/workspace.md,
// docs/routing.md); attachments come from the media endpoints with the same token. Text from
// shoppers is only ever set as textContent: nothing they write becomes markup.

import { Alerts } from "./alerts.js";
import { callApi } from "./api.js";
import { clock, el, renderBody, uploadFile } from "./bodies.js";
import { KefuClient, frameParents, keepFragment, randomId, socketUrl } from "./client.js";
import { duration, t } from "./i18n.js";
import { TokenRenewal } from "./renewal.js";
import { showSettings, wireSettings } from "./settings.js";
import { Transcript } from "./transcript.js";

const TOKEN_KEY = "kefu.console.token";
const STATUS_KEY = "kefu.console.status";
const RECALL_WINDOW_MS = 120000;
const TYPING_SHOWN_MS = 6000;

const $ = (id) => document.getElementById(id);

// ---- state -------------------------------------------------------------------------------

const desk = {
  client: null,
  me: null, // hello.user
  convs: new Map(), // id -> Conversation (below)
  current: null, // id of the conversation shown
  queuesTimer: null,
  alerts: new Alerts((id) => select(id)),
  renewal: null, // TokenRenewal, once connected
};

class Conversation extends Transcript {
  constructor(map) {
    super();
    this.map = map; // the protocol's Conversation map
    this.item = null; // the inbox item: unread, waiting_ms, last
    this.pending = new Map(); // cmid -> {body, error}
    this.readSent = 0; // the highest seq this tab has sent a read receipt for
    this.context = null; // the customer context (customer_context, context)
    this.packet = null; // the handoff packet of `assigned` (bot transcript, intents, reason)
    this.notes = [];
    this.tags = [];
    this.typingUntil = 0;
    this.readBy = 0; // the shopper's read receipt
    this.watched = false; // a supervisor follows it live without having joined (follow)
    this.shopperOnline = null;
  }

  get id() {
    return this.map.id;
  }
}

function conversation(map) {
  let conv = desk.convs.get(map.id);
  if (!conv) {
    conv = new Conversation(map);
    desk.convs.set(map.id, conv);
  } else {
    conv.map = { ...conv.map, ...map };
  }
  return conv;
}

function mine(conv) {
  return conv.map.status === "open" && conv.map.assignee === desk.me.id;
}

// ---- start -------------------------------------------------------------------------------

function translate() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t("title");
}

function showLogin(error) {
  $("desk").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !error;
  $("login-error").textContent = error || "";
}

async function start() {
  translate();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
    $("login-token").value = "";
    connect();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (desk.client) desk.client.stop();
    location.reload();
  });
  wireThread();
  wirePanel();
  wireAlerts();
  wireRenewal();
  keepFragment({ token: TOKEN_KEY });
  connect();
}

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin();
  const url = await socketUrl();
  if (desk.client) desk.client.stop();
  desk.client = new KefuClient(url, token, onFrame, onState);
  desk.client.start();
  if (desk.renewal) desk.renewal.stop();
  desk.renewal = new TokenRenewal({ current: () => sessionStorage.getItem(TOKEN_KEY), use: renew, parents: await frameParents(), onNotice: showExpiry });
  desk.renewal.start();
}

// ---- a new token before this one ends (renewal.js): from the page that frames the console, or pasted

async function renew(token) {
  const expiry = await desk.client.renew(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  return expiry;
}

function showExpiry(secondsLeft) {
  $("expiry").hidden = secondsLeft === null;
  if (secondsLeft !== null) $("expiry-text").textContent = t("expiry", { t: duration(secondsLeft * 1000) });
}

function wireRenewal() {
  $("renew-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const said = $("renew-token").value.trim();
    const token = new URLSearchParams(said.includes("#") ? said.slice(said.indexOf("#") + 1) : "").get("token") || said; // a link or a token
    $("renew-error").textContent = "";
    try {
      await renew(token);
      $("renew-token").value = "";
      showExpiry(null);
      desk.renewal.schedule();
    } catch (err) {
      $("renew-error").textContent = `${err.code || ""} ${err.message}`.trim();
    }
  });
}

// ---- alerts (alerts.js) ------------------------------------------------------------------

function wireAlerts() {
  const button = $("alerts");
  const show = () => {
    button.setAttribute("aria-pressed", String(desk.alerts.on));
    button.textContent = t(desk.alerts.on ? "alerts_on" : "alerts_off");
  };
  button.hidden = !desk.alerts.supported;
  button.addEventListener("click", () => desk.alerts.toggle().then(show));
  show();
}

function preview(body) {
  if (!body) return "";
  if (body.kind === "text") return body.text;
  return `[${t(`kind_${body.kind}`)}]`;
}

function onState(state, detail = {}) {
  const link = $("link");
  link.dataset.state = state;
  if (state === "connecting") link.textContent = t("connecting");
  if (state === "offline") link.textContent = t("offline", { s: Math.ceil(detail.retryInMs / 1000) });
  if (state === "refused") {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(`${t("token_refused")}: ${detail.code}${detail.message ? ` (${detail.message})` : ""}`);
  }
  if (state === "live") {
    link.textContent = t("live");
    goLive(detail.hello).catch(showError);
  }
}

async function goLive(hello) {
  const firstTime = desk.me === null;
  desk.me = hello.user;
  if (!["agent", "supervisor"].includes(desk.me.role)) {
    desk.client.stop();
    sessionStorage.removeItem(TOKEN_KEY);
    return showLogin(t("not_staff"));
  }
  $("login").hidden = true;
  $("desk").hidden = false;
  $("me").textContent = `${desk.me.name} · ${t(desk.me.role)}`;
  $("tab-queues").hidden = desk.me.role !== "supervisor";
  $("tab-reports").hidden = desk.me.role !== "supervisor";
  $("tab-settings").hidden = desk.me.role !== "supervisor";
  const status = localStorage.getItem(STATUS_KEY) || "online";
  $("status").value = status;
  await setStatus(status);
  const inbox = await desk.client.request("inbox");
  const listed = new Set();
  for (const item of inbox.items) {
    const conv = conversation(item.conv);
    conv.item = item;
    listed.add(conv.id);
  }
  // conversations this tab held that are no longer assigned here (transferred, closed meanwhile)
  for (const conv of desk.convs.values()) {
    if (!listed.has(conv.id) && conv.map.assignee === desk.me.id) conv.map = { ...conv.map, assignee: "" };
  }
  renderInbox();
  for (const item of inbox.items) {
    const conv = desk.convs.get(item.conv.id);
    if (!conv.context && conv.id !== desk.current) loadContext(conv).catch(() => {}); // names for the inbox
  }
  if (firstTime && inbox.items.length && !desk.current) select(inbox.items[0].conv.id);
  else if (desk.current) renderThread();
}

async function setStatus(status) {
  try {
    const answer = await desk.client.request("status", { status });
    localStorage.setItem(STATUS_KEY, status);
    desk.max = answer.max;
    $("load").textContent = t("serving", { n: answer.active.length, max: answer.max });
  } catch (err) {
    showError(err);
  }
}

// ---- frames ------------------------------------------------------------------------------

function onFrame(frame) {
  switch (frame.t) {
    case "msg":
      return onMessage(frame);
    case "inbox": {
      const conv = conversation(frame.item.conv);
      conv.item = frame.item;
      renderInbox();
      return refreshLoad();
    }
    case "assigned": {
      const conv = conversation(frame.conv);
      conv.packet = frame.context || null;
      if (frame.customer) conv.context = frame.customer;
      desk.alerts.tell(conv.id, t("alert_assigned", { who: customerName(conv) }), conv.map.subject || t("alert_assigned_body"), desk.current);
      renderInbox();
      if (!desk.current) select(conv.id);
      else if (desk.current === conv.id) renderThread();
      return refreshLoad();
    }
    case "erased": {
      const conv = desk.convs.get(frame.conv);
      if (!conv) return undefined;
      conv.erase(frame.through);
      if (desk.current !== conv.id) return undefined;
      renderMessages();
      return loadNotes(conv).catch(showError); // the conversation's notes went with it
    }
    case "conv": {
      const conv = conversation(frame.conv);
      renderInbox();
      if (desk.current === conv.id) renderHead();
      return refreshLoad();
    }
    case "customer_context": {
      const conv = desk.convs.get(frame.conv);
      if (conv) conv.context = frame;
      if (desk.current === frame.conv) renderPanel();
      return;
    }
    case "typing": {
      const conv = desk.convs.get(frame.conv);
      if (!conv || frame.user === desk.me.id) return;
      conv.typingUntil = frame.on ? Date.now() + TYPING_SHOWN_MS : 0;
      if (desk.current === frame.conv) renderTyping();
      return;
    }
    case "receipt": {
      const conv = desk.convs.get(frame.conv);
      if (!conv || frame.kind !== "read" || frame.user === desk.me.id) return;
      conv.readBy = Math.max(conv.readBy, frame.seq);
      if (desk.current === frame.conv) renderMessages();
      return;
    }
    case "presence": {
      const conv = desk.convs.get(frame.conv);
      if (!conv || frame.role !== "shopper") return;
      conv.shopperOnline = frame.online;
      if (desk.current === frame.conv) renderHead();
      return;
    }
    case "note": {
      const conv = desk.convs.get(frame.conv);
      if (!conv) return;
      if (!conv.notes.some((n) => n.id === frame.id)) conv.notes.push(frame);
      if (desk.current === frame.conv) renderPanel();
      return;
    }
    case "tags": {
      const conv = desk.convs.get(frame.conv);
      if (!conv) return;
      conv.tags = frame.tags;
      if (desk.current === frame.conv) renderPanel();
      return;
    }
    case "rated": {
      const conv = desk.convs.get(frame.conv);
      if (!conv) return;
      conv.rating = frame;
      if (desk.current === frame.conv) renderPanel();
      return;
    }
    default:
      return; // joined, left, pong, …: nothing to show
  }
}

function onMessage(msg) {
  const conv = desk.convs.get(msg.conv) || conversation({ id: msg.conv, status: "open" });
  const news = !conv.messages.has(msg.seq);
  conv.add(msg);
  if (news && msg.role === "shopper" && mine(conv)) desk.alerts.tell(conv.id, customerName(conv), preview(msg.body), desk.current);
  if (msg.from === desk.me.id) conv.pending.delete(msg.cmid); // sent from another tab
  if (conv.loaded && msg.seq > conv.held() + 1) fillGap(conv);
  if (conv.loaded) desk.client.hold(conv.id, conv.held());
  if (desk.current === conv.id) {
    if (msg.role === "shopper") conv.typingUntil = 0;
    renderMessages();
    renderTyping();
    markRead(conv);
  }
}

/** A message came with a seq past what is held: fetch what lies between. */
async function fillGap(conv) {
  const after = conv.held();
  const page = await desk.client.request("history", { conv: conv.id, after });
  for (const m of page.messages) conv.add(m);
  desk.client.hold(conv.id, conv.held());
  if (desk.current === conv.id) renderMessages();
}

function markRead(conv) {
  if (document.hidden || !conv.messages.size) return;
  if (!mine(conv) && !conv.joined && desk.me.role === "supervisor") return; // only participants have receipts
  const last = conv.lastSeq();
  if (last <= conv.readSent) return;
  conv.readSent = last;
  desk.client.request("receipt", { conv: conv.id, kind: "read", seq: last }).catch(() => (conv.readSent = 0));
}

document.addEventListener("visibilitychange", () => {
  const conv = desk.current && desk.convs.get(desk.current);
  if (conv) markRead(conv);
});

/** How many conversations the agent serves, of the most routing gives them (from `status`). */
function refreshLoad() {
  const serving = [...desk.convs.values()].filter((c) => mine(c) && c.map.stage === "assigned").length;
  $("load").textContent = t("serving", { n: serving, max: desk.max ?? "?" });
}

// ---- the inbox ---------------------------------------------------------------------------

function renderInbox() {
  const list = $("inbox");
  const shown = [...desk.convs.values()].filter((c) => mine(c) || c.id === desk.current);
  shown.sort((a, b) => (b.item ? b.item.waiting_ms : 0) - (a.item ? a.item.waiting_ms : 0) || b.map.created_at - a.map.created_at);
  list.replaceChildren(
    ...shown.map((conv) => {
      const item = conv.item || {};
      const last = item.last;
      const name = customerName(conv);
      return el(
        "li",
        {
          class: `conv${conv.id === desk.current ? " selected" : ""}${mine(conv) ? "" : " gone"}`,
          "data-conv": conv.id,
          onclick: () => select(conv.id),
        },
        el("div", { class: "row" },
          el("strong", { class: "name", text: name }),
          el("span", { class: "badge", text: stageText(conv.map) }),
          item.unread ? el("span", { class: "unread", text: String(item.unread), title: t("unread", { n: item.unread }) }) : null),
        el("div", { class: "preview", text: last ? last.text : conv.map.subject || "" }),
        item.waiting_ms ? el("div", { class: "waiting", text: t("waiting", { t: duration(item.waiting_ms) }) }) : null,
      );
    }),
  );
  $("inbox-empty").hidden = shown.length > 0;
  const unread = shown.reduce((n, c) => n + ((c.item && c.item.unread) || 0), 0);
  document.title = unread ? `(${unread}) ${t("title")}` : t("title");
}

function stageText(map) {
  if (map.status === "closed") return t("closed");
  return map.stage ? t(`stage_${map.stage}`) : "";
}

function customerName(conv) {
  const ctx = conv.context && conv.context.context;
  const profile = ctx && ctx.profile;
  if (profile && profile.name) return profile.name;
  const packet = conv.packet && conv.packet.customer;
  if (packet && packet.name) return packet.name;
  return conv.map.customer || conv.id;
}

// ---- one conversation --------------------------------------------------------------------

async function select(id) {
  if (Object.values(MAIN_VIEWS).some((view) => !$(view).hidden)) showTab("inbox");
  desk.current = id;
  const conv = desk.convs.get(id);
  $("thread-empty").hidden = true;
  $("thread-body").hidden = false;
  $("panel").hidden = false;
  $("transfer-form").hidden = true;
  $("thread-error").hidden = true;
  renderInbox();
  renderThread();
  try {
    if (!conv.loaded) await loadHistory(conv);
    if (desk.me.role === "supervisor" && !mine(conv) && !conv.joined && !conv.watched) await follow(conv);
    await Promise.all([loadContext(conv), loadNotes(conv)]);
    markRead(conv);
  } catch (err) {
    showError(err);
  }
}

async function loadHistory(conv, before = Number.MAX_SAFE_INTEGER) {
  const page = await desk.client.request("history", { conv: conv.id, before });
  conv.addPage(page);
  for (const r of page.receipts || []) if (r.kind === "read" && r.user !== desk.me.id && r.user === conv.map.customer) conv.readBy = Math.max(conv.readBy, r.seq);
  desk.client.hold(conv.id, conv.held());
  if (desk.current === conv.id) renderMessages();
}

async function loadContext(conv) {
  try {
    const answer = await desk.client.request("context", { conv: conv.id });
    conv.context = answer;
    conv.tags = answer.tags || [];
  } catch (err) {
    if (err.code !== "forbidden") throw err;
  }
  renderInbox(); // the customer's name
  if (desk.current === conv.id) {
    renderPanel();
    renderHead();
  }
}

async function loadNotes(conv) {
  try {
    const answer = await desk.client.request("notes", { conv: conv.id });
    conv.notes = answer.notes;
  } catch (err) {
    if (err.code !== "forbidden") throw err;
  }
  if (desk.current === conv.id) renderPanel();
}

function renderThread() {
  renderHead();
  renderMessages();
  renderTyping();
  renderPanel();
}

function renderHead() {
  const conv = desk.convs.get(desk.current);
  if (!conv) return;
  $("thread-title").textContent = `${customerName(conv)}${conv.map.channel ? ` · ${conv.map.channel}` : ""}${conv.map.subject ? ` · ${conv.map.subject}` : ""}`;
  $("thread-stage").textContent = stageText(conv.map);
  $("thread-presence").textContent = conv.shopperOnline === null ? "" : conv.shopperOnline ? t("online") : t("offline_user");
  const serving = mine(conv);
  const supervising = desk.me.role === "supervisor" && conv.map.status === "open";
  const writable = (serving || conv.joined) && conv.map.status !== "closed";
  $("join").hidden = !supervising || serving || conv.joined;
  // routing resolves only what someone serves (a queued conversation waits for its agent)
  $("resolve").disabled = !(serving || supervising) || ["queued", "resolved"].includes(conv.map.stage);
  $("transfer").disabled = !(serving || supervising);
  $("text").disabled = !writable;
  $("send").disabled = !writable;
}

function renderTyping() {
  const conv = desk.convs.get(desk.current);
  const typing = conv && conv.typingUntil > Date.now();
  $("typing").hidden = !typing;
  if (typing) setTimeout(renderTyping, conv.typingUntil - Date.now() + 50);
}

function renderMessages() {
  const conv = desk.convs.get(desk.current);
  if (!conv) return;
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const items = conv.ordered().map((m) => renderMessage(conv, m));
  for (const [cmid, pending] of conv.pending) items.push(renderPending(conv, cmid, pending));
  $("message-list").replaceChildren(...items);
  $("earlier").hidden = !conv.more;
  if (atBottom || items.length < 30) box.scrollTop = box.scrollHeight;
}

function renderMessage(conv, m) {
  const body = m.body || {};
  if (m.role === "system" || body.kind === "event") {
    return el("li", { class: "event", "data-seq": m.seq, text: body.text || body.event || "" });
  }
  const own = m.from === desk.me.id;
  const who = own ? desk.me.name : m.role === "shopper" ? customerName(conv) : `${m.from} · ${t(m.role)}`;
  const meta = el("div", { class: "meta" }, el("span", { text: who }), el("time", { text: clock(m.ts) }));
  if (own && conv.readBy >= m.seq) meta.append(el("span", { class: "read", text: t("read") }));
  if (own && body.kind !== "recalled" && desk.client.serverNow() - m.ts < RECALL_WINDOW_MS) {
    meta.append(el("button", { type: "button", class: "link recall", text: t("recall"), onclick: () => recall(conv, m.seq) }));
  }
  return el("li", { class: `msg ${own ? "own" : m.role}`, "data-seq": m.seq }, meta, renderBody(body, sessionStorage.getItem(TOKEN_KEY)));
}

function renderPending(conv, cmid, pending) {
  const status = pending.error
    ? el("span", { class: "error", text: t("failed", { e: pending.error }) })
    : el("span", { class: "muted", text: t("sending") });
  return el("li", { class: "msg own pending", "data-cmid": cmid }, el("div", { class: "meta" }, status), renderBody(pending.body, sessionStorage.getItem(TOKEN_KEY)));
}

async function recall(conv, seq) {
  try {
    await desk.client.request("recall", { conv: conv.id, seq });
  } catch (err) {
    showError(err);
  }
}

function showError(err) {
  const box = $("thread-error");
  box.textContent = err.code ? `${err.code}: ${err.message}` : String(err.message || err);
  box.hidden = false;
  setTimeout(() => (box.hidden = true), 8000);
}

// ---- the composer, quick replies, resolve and transfer -----------------------------------

function wireThread() {
  $("status").addEventListener("change", () => setStatus($("status").value));
  $("earlier").addEventListener("click", () => {
    const conv = desk.convs.get(desk.current);
    loadHistory(conv, conv.firstSeq()).catch(showError);
  });
  const text = $("text");
  let typingSent = 0;
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      // an IME (拼音) uses Enter to confirm a word: only a plain Enter sends
      event.preventDefault();
      const picked = $("replies").querySelector("li.active");
      if (!$("replies").hidden && picked) return picked.click();
      $("composer").requestSubmit();
    } else if ((event.key === "ArrowDown" || event.key === "ArrowUp") && !$("replies").hidden) {
      event.preventDefault();
      moveReply(event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Escape") {
      $("replies").hidden = true;
    }
  });
  text.addEventListener("input", () => {
    const conv = desk.convs.get(desk.current);
    if (conv && Date.now() - typingSent > 3000 && text.value) {
      typingSent = Date.now();
      desk.client.request("typing", { conv: conv.id, on: true }, 3000).catch(() => {});
    }
    searchReplies(text.value);
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    text.value = "";
    $("replies").hidden = true;
    $("missing").hidden = true;
    typingSent = 0;
    post({ kind: "text", text: value });
  });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = "";
    if (file) upload(file).catch(showError);
  });
  $("resolve").addEventListener("click", async () => {
    try {
      await desk.client.request("resolve", { conv: desk.current });
    } catch (err) {
      showError(err);
    }
  });
  $("transfer").addEventListener("click", () => ($("transfer-form").hidden = !$("transfer-form").hidden));
  $("join").addEventListener("click", async () => {
    const conv = desk.convs.get(desk.current);
    try {
      const answer = await desk.client.request("join", { conv: conv.id });
      conv.joined = true;
      conv.map = { ...conv.map, ...answer.conv };
      await loadHistory(conv); // what was said meanwhile; live from now on
      renderHead();
    } catch (err) {
      showError(err);
    }
  });
  $("transfer-cancel").addEventListener("click", () => ($("transfer-form").hidden = true));
  $("transfer-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = { conv: desk.current, [$("transfer-kind").value]: $("transfer-target").value.trim() };
    const note = $("transfer-note").value.trim();
    if (note) fields.note = note;
    try {
      await desk.client.request("transfer", fields);
      $("transfer-form").hidden = true;
      $("transfer-target").value = "";
      $("transfer-note").value = "";
    } catch (err) {
      showError(err);
    }
  });
}

function post(body) {
  const conv = desk.convs.get(desk.current);
  const cmid = randomId();
  conv.pending.set(cmid, { body, error: null });
  renderMessages();
  desk.client.request("typing", { conv: conv.id, on: false }, 3000).catch(() => {});
  desk.client.send(conv.id, body, cmid).then(
    (ack) => {
      conv.pending.delete(cmid);
      if (!conv.messages.has(ack.seq)) {
        conv.add({ conv: conv.id, seq: ack.seq, cmid, from: desk.me.id, role: desk.me.role, ts: ack.ts, body });
      }
      desk.client.hold(conv.id, conv.held());
      if (desk.current === conv.id) renderMessages();
      if (body.attachment) refetchMessage(conv, ack.seq);
    },
    (err) => {
      conv.pending.get(cmid).error = `${err.code}: ${err.message}`;
      if (desk.current === conv.id) renderMessages();
    },
  );
}

/** The stored body of an attachment message has the facts the server read (size, w, h…). */
async function refetchMessage(conv, seq) {
  const page = await desk.client.request("history", { conv: conv.id, after: seq - 1, limit: 1 });
  for (const m of page.messages) conv.add(m);
  if (desk.current === conv.id) renderMessages();
}

async function upload(file) {
  const conv = desk.current;
  const { kind, id } = await uploadFile(conv, file, sessionStorage.getItem(TOKEN_KEY));
  if (desk.current === conv) post({ kind, attachment: id });
}

let replySearch = 0;

async function searchReplies(value) {
  const box = $("replies");
  if (!value.startsWith("/") || value.includes("\n")) {
    box.hidden = true;
    return;
  }
  const asked = ++replySearch;
  let answer;
  try {
    answer = await desk.client.request("replies", { q: value });
  } catch (err) {
    return showError(err);
  }
  if (asked !== replySearch) return; // a newer search is on its way
  box.replaceChildren(
    ...answer.replies.slice(0, 8).map((reply, i) =>
      el("li", { role: "option", class: i === 0 ? "active" : "", "data-shortcut": reply.shortcut, onclick: () => useReply(reply.shortcut) },
        el("strong", { text: reply.shortcut }), el("span", { text: ` ${reply.title || ""}` }), el("div", { class: "muted", text: reply.text }))),
  );
  box.hidden = answer.replies.length === 0;
}

function moveReply(step) {
  const options = [...$("replies").children];
  const at = options.findIndex((o) => o.classList.contains("active"));
  const next = (at + step + options.length) % options.length;
  options.forEach((o, i) => o.classList.toggle("active", i === next));
}

async function useReply(shortcut) {
  $("replies").hidden = true;
  try {
    const filled = await desk.client.request("reply_fill", { conv: desk.current, shortcut });
    $("text").value = filled.text;
    $("missing").hidden = !filled.missing.length;
    $("missing").textContent = t("missing_vars", { v: filled.missing.map((name) => `{${name}}`).join(" ") });
    $("text").focus();
  } catch (err) {
    showError(err);
  }
}

// ---- the customer panel: context, tags, notes ---------------------------------------------

function wirePanel() {
  $("tag-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tag = $("tag-input").value.trim();
    const conv = desk.convs.get(desk.current);
    if (!tag || !conv) return;
    $("tag-input").value = "";
    await saveTags(conv, [...new Set([...conv.tags, tag])]);
  });
  $("note-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("note-input").value.trim();
    const conv = desk.convs.get(desk.current);
    if (!text || !conv) return;
    try {
      const answer = await desk.client.request("note", { conv: conv.id, text });
      $("note-input").value = "";
      if (!conv.notes.some((n) => n.id === answer.note.id)) conv.notes.push(answer.note);
      renderPanel();
    } catch (err) {
      showError(err);
    }
  });
}

async function saveTags(conv, tags) {
  try {
    const answer = await desk.client.request("tags", { conv: conv.id, tags });
    conv.tags = answer.tags;
    renderPanel();
  } catch (err) {
    showError(err);
  }
}

function section(title, ...children) {
  const items = children.filter(Boolean);
  return el("section", {}, el("h3", { text: title }), ...(items.length ? items : [el("p", { class: "muted", text: t("none") })]));
}

function renderPanel() {
  const conv = desk.convs.get(desk.current);
  if (!conv) return;
  const box = $("customer");
  const found = conv.context;
  const parts = [];
  if (!found || found.status === "pending") parts.push(el("p", { class: "muted", text: t("context_pending") }));
  else if (found.status === "unavailable") parts.push(el("p", { class: "warning", text: t("context_unavailable", { r: found.reason || "" }) }));
  const ctx = (found && found.context) || {};
  const profile = ctx.profile || {};
  parts.push(
    el("p", { class: "profile" },
      el("strong", { text: customerName(conv) }),
      profile.tier ? el("span", { class: "badge", text: profile.tier }) : null,
      ...(profile.tags || []).map((tag) => el("span", { class: "chip", text: tag })),
      el("div", { class: "muted", text: found && found.customer ? found.customer.links.join(" · ") : conv.map.customer || "" })),
  );
  const packet = conv.packet;
  if (packet && packet.handoff) {
    parts.push(section(t("handoff"),
      el("p", { text: `${packet.handoff.reason}${packet.handoff.detail ? ` — ${packet.handoff.detail}` : ""}` }),
      packet.intent ? el("p", { text: `${t("intent")}: ${packet.intent}` }) : null,
      packet.frustration ? el("p", { text: `${t("frustration")}: ${Number(packet.frustration.score).toFixed(2)}` }) : null,
      packet.transfer && packet.transfer.note ? el("p", { class: "note", text: `${packet.transfer.from}: ${packet.transfer.note}` }) : null));
  }
  const product = found && found.product;
  if (product && product.title) {
    parts.push(section(t("product"), el("p", { text: `${product.title}${product.price != null ? ` · ${product.currency || ""}${product.price}` : ""}` })));
  }
  parts.push(section(t("orders"), ...(ctx.orders || []).map((o) =>
    el("div", { class: "order" }, el("strong", { text: o.id }), el("span", { class: "badge", text: o.status || "" }),
      el("div", { class: "muted", text: (o.items || []).map((i) => i.title || i.name || i.sku || "").filter(Boolean).join("、") })))));
  parts.push(section(t("viewed"), ...(ctx.viewed || []).map((v) => el("div", { text: v.title || v.product || v.id || "" }))));
  parts.push(section(t("history"), ...(ctx.conversations || []).filter((c) => c.id !== conv.id).map((c) =>
    el("div", { class: "past" },
      el("span", { text: `${clock(c.created_at)} · ${c.channel} · ${c.summary || ""}` }),
      c.satisfaction ? el("span", { class: "badge", text: `★${c.satisfaction.score}` }) : null))));
  const rating = conv.rating || (found && found.satisfaction);
  if (rating) parts.push(el("p", { class: "rated", text: t("rated", { s: rating.score }) }));
  box.replaceChildren(...parts);
  $("tags").replaceChildren(...conv.tags.map((tag) =>
    el("span", { class: "chip" }, tag, el("button", { type: "button", class: "link", title: "×", text: "×", onclick: () => saveTags(conv, conv.tags.filter((x) => x !== tag)) }))));
  $("notes").replaceChildren(...conv.notes.map((n) =>
    el("li", { class: "note" }, el("div", { class: "meta" }, el("span", { text: n.name || n.author }), el("time", { text: clock(n.ts) })), el("div", { text: n.text }))));
}

// ---- supervisors: the queues ---------------------------------------------------------------

function wireTabs() {
  $("tab-inbox").addEventListener("click", () => showTab("inbox"));
  $("tab-queues").addEventListener("click", () => showTab("queues"));
  $("tab-reports").addEventListener("click", () => showTab("reports"));
  $("tab-replies").addEventListener("click", () => showTab("replies"));
  $("tab-settings").addEventListener("click", () => showTab("settings"));
  $("report-period").addEventListener("change", () => renderReport().catch(showReportError));
}

const MAIN_VIEWS = { reports: "reports", replies: "replies-view", settings: "settings-view" }; // tabs that take the conversation's place

function showTab(name) {
  for (const tab of ["inbox", "queues", "reports", "replies", "settings"]) $(`tab-${tab}`).classList.toggle("active", name === tab);
  $("inbox").hidden = name !== "inbox";
  $("inbox-empty").hidden = name !== "inbox" || $("inbox").children.length > 0;
  $("queues").hidden = name !== "queues";
  for (const [tab, view] of Object.entries(MAIN_VIEWS)) $(view).hidden = name !== tab;
  const thread = !(name in MAIN_VIEWS) && desk.current !== null;
  $("thread-body").hidden = !thread;
  $("panel").hidden = !thread;
  $("thread-empty").hidden = thread || name in MAIN_VIEWS;
  clearInterval(desk.queuesTimer);
  if (name === "queues") {
    renderQueues();
    desk.queuesTimer = setInterval(renderQueues, 5000);
  }
  if (name === "reports") renderReport().catch(showReportError);
  if (name === "replies") renderReplyList().catch(showError);
  if (name === "settings") showSettings().catch(showError);
}

async function renderQueues() {
  let answer;
  let open;
  try {
    [answer, open] = await Promise.all([desk.client.request("queues"), desk.client.request("list", { status: "open", limit: 50 })]);
  } catch (err) {
    return showError(err);
  }
  const groups = Object.entries(answer.queues);
  const waiting = groups.flatMap(([group, items]) => items.map((item) =>
    el("li", { class: "queued", "data-conv": item.conv, onclick: () => watch(item, group) },
      el("strong", { text: group }), ` ${item.customer} · `, el("span", { text: t("waited", { t: duration(item.waited_s * 1000) }) }))));
  $("queues").replaceChildren(
    el("h3", { text: t("queues") }),
    waiting.length ? el("ul", { class: "queue" }, ...waiting) : el("p", { class: "muted", text: t("queue_empty") }),
    el("h3", { text: t("agents") }),
    el("table", { class: "agents" }, ...answer.agents.map((a) =>
      el("tr", {}, el("td", { text: a.name || a.user }), el("td", { text: t(`status_${a.status}`) }), el("td", { text: `${Array.isArray(a.active) ? a.active.length : a.active}/${a.max}` }), el("td", { text: (a.groups || []).join(", ") })))),
    // every open conversation of the shop (a supervisor's `list`), newest first: any may be opened and joined
    el("h3", { text: t("all_open") }),
    el("ul", { class: "queue" }, ...open.convs.map((map) =>
      el("li", { class: "queued", "data-conv": map.id, onclick: () => watchConversation(map) },
        el("strong", { text: map.customer }), ` · ${stageText(map)}${map.assignee ? ` · ${map.assignee}` : ""}`))),
  );
}

/** A supervisor reads a conversation they have not joined live, as its members do: `resume` from
 * what is held subscribes this connection to it (supervisors may read every conversation of the
 * tenant) without making them a participant, so they hear its messages, typing and receipts and
 * nobody in it hears of them. The client's cursor keeps it live across reconnects. */
async function follow(conv) {
  await desk.client.request("resume", { convs: { [conv.id]: conv.held() } });
  conv.watched = true;
}

/** A supervisor opens any open conversation of the shop from the list. */
function watchConversation(map) {
  const known = desk.convs.get(map.id);
  const conv = conversation(map);
  if (known && !mine(conv) && !conv.joined && !conv.watched) conv.loaded = false; // not live here: read it again
  select(conv.id);
}

/** A supervisor opens a queued conversation: its transcript and customer, to join or transfer it. */
function watch(item, group) {
  const known = desk.convs.get(item.conv);
  const conv = known || conversation({ id: item.conv, status: "open", stage: "queued", customer: item.customer, group, assignee: "" });
  if (known) conv.loaded = false; // read it again: nothing of it is live here before a join
  select(conv.id);
}

// ---- quick replies: an agent's own, and for supervisors the shop's -------------------------

function mayManage(reply) {
  return reply.owner === desk.me.id || (reply.owner === "*" && desk.me.role === "supervisor");
}

async function renderReplyList() {
  $("reply-scope").hidden = desk.me.role !== "supervisor";
  const answer = await desk.client.request("replies", {});
  $("reply-list").replaceChildren(...answer.replies.map((reply) =>
    el("li", { class: "reply", "data-shortcut": reply.shortcut },
      el("div", { class: "row" },
        el("strong", { text: reply.shortcut }), el("span", { text: reply.title }),
        el("span", { class: "badge", text: reply.owner === "*" ? t("scope_tenant") : t("scope_mine") }),
        el("span", { class: "grow" }),
        mayManage(reply) ? el("button", { type: "button", class: "link", text: t("edit"), onclick: () => editReply(reply) }) : null,
        mayManage(reply) ? el("button", { type: "button", class: "link", text: t("delete"), onclick: () => deleteReply(reply) }) : null),
      el("div", { class: "muted", text: reply.text }))));
}

function editReply(reply) {
  $("reply-shortcut").value = reply.shortcut;
  $("reply-title").value = reply.title || "";
  $("reply-text").value = reply.text;
  $("reply-scope").value = reply.owner === "*" ? "tenant" : "mine";
  $("reply-text").focus();
}

async function deleteReply(reply) {
  try {
    await desk.client.request("reply_delete", { scope: reply.owner === "*" ? "tenant" : "mine", shortcut: reply.shortcut });
    await renderReplyList();
  } catch (err) {
    showError(err);
  }
}

function wireReplies() {
  $("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    let shortcut = $("reply-shortcut").value.trim();
    if (!shortcut.startsWith("/")) shortcut = `/${shortcut}`;
    const reply = { shortcut, title: $("reply-title").value.trim(), text: $("reply-text").value };
    const scope = desk.me.role === "supervisor" ? $("reply-scope").value : "mine";
    try {
      await desk.client.request("reply_save", { scope, reply });
      for (const id of ["reply-shortcut", "reply-title", "reply-text"]) $(id).value = "";
      await renderReplyList();
    } catch (err) {
      showError(err);
    }
  });
}

// ---- supervisors: the report (GET /v1/reports/summary, which takes a supervisor's token) --------
// (and the Settings tab, settings.js: the shop's agents, hours, routing and bot, with the same token)

function showReportError(err) {
  $("report").replaceChildren(el("p", { class: "error", text: err.code ? `${err.code}: ${err.message}` : String(err.message || err) }));
}

function pair(stat) {
  if (!stat || !stat.count) return "—";
  return `${duration(stat.p50)} / ${duration(stat.p90)}`;
}

function percent(part, whole) {
  return whole ? `${Math.round((100 * part) / whole)}%` : "—";
}

function table(headings, rows) {
  if (!rows.length) return el("p", { class: "muted", text: t("none") });
  return el("table", { class: "report" },
    el("tr", {}, ...headings.map((h) => el("th", { text: h }))),
    ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", { text: String(cell) })))));
}

async function renderReport() {
  const days = Number($("report-period").value);
  const since = new Date();
  since.setHours(0, 0, 0, 0);
  since.setDate(since.getDate() - (days - 1));
  const r = await callApi(sessionStorage.getItem(TOKEN_KEY), "GET", `/v1/reports/summary?since=${since.getTime()}&utc_offset_min=${-new Date().getTimezoneOffset()}`);
  const card = (label, value, note) => el("div", { class: "card" }, el("div", { class: "muted", text: label }), el("strong", { text: value }), note ? el("div", { class: "muted", text: note }) : null);
  const sat = r.satisfaction;
  const parts = [
    r.truncated ? el("p", { class: "warning", text: t("r_truncated", { n: r.conversations }) }) : null,
    el("div", { class: "cards" },
      card(t("r_conversations"), String(r.conversations)),
      card(t("r_contained"), percent(r.bot.contained, r.bot.conversations), `${r.bot.contained}/${r.bot.conversations}`),
      card(t("r_first_response"), pair(r.first_response_ms)),
      card(t("r_wait"), pair(r.wait_ms)),
      card(t("r_satisfaction"), sat.average == null ? "—" : sat.average.toFixed(2), t("r_responses", { n: sat.responses })),
      card(t("r_conversion"), r.conversion.served ? percent(r.conversion.converted, r.conversion.served) : "—", `${r.conversion.converted}/${r.conversion.served}`)),
    el("h3", { text: t("r_topics") }),
    table([t("intent"), t("r_conversations")], r.topics.slice(0, 10).map((x) => [x.intent, x.count])),
    el("h3", { text: t("r_handoffs") }),
    table([t("handoff"), t("r_conversations")], Object.entries(r.handoffs).sort((a, b) => b[1] - a[1])),
    el("h3", { text: t("r_agents") }),
    table([t("r_agent"), t("r_assigned"), t("r_messages"), t("r_resolved"), t("r_first_response"), t("r_satisfaction")],
      r.agents.map((a) => [a.agent, a.assigned, a.messages, a.resolved, pair(a.first_response_ms),
        a.satisfaction.average == null ? "—" : `${a.satisfaction.average.toFixed(2)} (${a.satisfaction.responses})`])),
    el("h3", { text: t("r_tags") }),
    table([t("tags"), t("r_conversations")], r.tags.slice(0, 10).map((x) => [x.tag, x.count])),
    el("h3", { text: t("r_days") }),
    table([t("r_day"), t("r_conversations"), t("r_to_person"), t("r_contained"), t("r_first_response")],
      r.days.map((d) => [d.day, d.conversations, d.to_person, d.contained, pair(d.first_response_ms)])),
  ];
  $("report").replaceChildren(...parts.filter(Boolean));
}

wireTabs();
wireReplies();
wireSettings(() => sessionStorage.getItem(TOKEN_KEY));
start();
