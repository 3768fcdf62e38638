// The shopper's chat: one conversation with the shop (its bot first, then a person), in a page
// a shop's website or app embeds. It takes a shopper's token from the URL's fragment
// (`/chat/#token=…&product=…`), minted by the shop's backend for whoever is browsing.
//
// The conversation is opened with the first message (so a visitor who only looks opens none),
// the bot's suggested questions are buttons, 转人工 asks for a person (`handoff`), and the
// satisfaction survey is answered in place (`rate`).
//
// Framed by the shop's page (the widget, widget.js, or the shop's own frame), it tells that page
// when it is live (`kefu:ready`), how many of the bot's and agents' messages the shopper has not
// seen (`kefu:unread`), and that the shopper pressed Escape (`kefu:close`); it hears whether it is
// on screen (`kefu:shown`) and the product to open its next conversation with (`kefu:product`).
// "Seen" is the shopper's read receipt: the chat sends one only while it is on screen, so the
// count is the messages from others after it, and it survives a reload or the shop's next page.

import { clock, el, renderBody, uploadFile } from "./bodies.js";
import { KefuClient, frameParents, keepFragment, randomId, socketUrl } from "./client.js";
import { Embedder } from "./embedder.js";
import { t } from "./i18n.js";
import { TokenRenewal } from "./renewal.js";
import { Transcript } from "./transcript.js";

const TOKEN_KEY = "kefu.chat.token";
const PRODUCT_KEY = "kefu.chat.product";
const RECALL_WINDOW_MS = 120000;
const TYPING_SHOWN_MS = 6000;

const $ = (id) => document.getElementById(id);

const chat = {
  client: null,
  me: null,
  conv: null, // the Conversation map, once opened or found
  opening: null, // the `open` on its way
  transcript: new Transcript(), // the conversation's messages
  pending: new Map(), // cmid -> {body, error}
  names: new Map(), // agent -> name, from `assigned` events and `joined` frames
  typingUntil: 0,
  readSent: 0, // the shopper's read receipt: what they have seen of the conversation
  shown: true, // the frame is on screen (a widget's closed panel says it is not: `kefu:shown`)
  embedder: null, // the shop's page that frames the chat (embedder.js)
  ready: false, // went live once, and told the framing page so (`kefu:ready`)
  unreadTold: 0, // the count the framing page was last told (`kefu:unread`)
  score: 0,
};

const OTHERS = new Set(["bot", "agent", "supervisor"]); // whose messages count as unread

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function problem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

async function start() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t("chat_title");
  chat.shown = new URLSearchParams(location.hash.slice(1)).get("shown") !== "0"; // a widget may load it closed
  keepFragment({ token: TOKEN_KEY, product: PRODUCT_KEY });
  wire();
  if (!token()) {
    problem(t("no_token"));
    $("composer").hidden = true;
    return;
  }
  const parents = await frameParents();
  chat.embedder = new Embedder(parents);
  chat.embedder.on("kefu:shown", (data) => {
    chat.shown = data.shown !== false;
    if (chat.ready) notice();
  });
  chat.embedder.on("kefu:product", (data) => {
    if (typeof data.product !== "string") return;
    if (data.product) sessionStorage.setItem(PRODUCT_KEY, data.product.slice(0, 128));
    else sessionStorage.removeItem(PRODUCT_KEY);
  });
  chat.client = new KefuClient(await socketUrl(), token(), onFrame, onState);
  chat.client.start();
  // the shop's page that frames the chat may hand it a new token before this one ends (renewal.js)
  new TokenRenewal({
    current: token,
    use: async (fresh) => {
      const expiry = await chat.client.renew(fresh);
      sessionStorage.setItem(TOKEN_KEY, fresh);
      return expiry;
    },
    parents,
    onNotice: (left) => {
      $("expiry").hidden = left === null;
      if (left !== null) $("expiry").textContent = t("chat_session_ends", { s: left });
    },
  }).start();
}

function onState(state, detail = {}) {
  $("link").dataset.state = state;
  $("link").textContent = state === "live" ? "" : state === "offline" ? t("offline", { s: Math.ceil(detail.retryInMs / 1000) }) : t("connecting");
  if (state === "refused") {
    sessionStorage.removeItem(TOKEN_KEY);
    problem(t("chat_refused", { c: detail.code }));
    $("composer").hidden = true;
  }
  if (state === "live") goLive(detail.hello).catch((err) => problem(`${err.code || ""} ${err.message}`));
}

async function goLive(hello) {
  chat.me = hello.user;
  $("who").textContent = hello.user.name;
  if (chat.conv) return render(); // a reconnect: the client resumed the conversation
  const listed = await chat.client.request("list", { status: "open", limit: 1 });
  if (listed.convs.length) {
    chat.conv = listed.convs[0];
    await loadHistory();
  }
  render();
  if (!chat.ready) chat.embedder.tell({ type: "kefu:ready" });
  chat.ready = true;
  notice();
}

async function loadHistory(before = Number.MAX_SAFE_INTEGER) {
  const page = await chat.client.request("history", { conv: chat.conv.id, before });
  chat.transcript.addPage(page);
  for (const m of page.messages) learnName(m);
  for (const r of page.receipts || []) {
    if (r.user === chat.me.id && r.kind === "read") chat.readSent = Math.max(chat.readSent, r.seq);
  }
  chat.client.hold(chat.conv.id, chat.transcript.held());
}

function remember(m) {
  chat.transcript.add(m);
  learnName(m);
}

/** The agents' names, from their `assigned` events. */
function learnName(m) {
  const body = m.body || {};
  if (body.kind === "event" && body.event === "assigned" && body.agent_name) chat.names.set(body.agent, body.agent_name);
}

// ---- frames ------------------------------------------------------------------------------

function onFrame(frame) {
  if (!chat.conv || frame.conv !== chat.conv.id && !(frame.conv && frame.conv.id === chat.conv.id)) return;
  switch (frame.t) {
    case "msg":
      remember(frame);
      if (frame.role !== "shopper") chat.typingUntil = 0;
      chat.client.hold(chat.conv.id, chat.transcript.held());
      render();
      return notice();
    case "erased":
      chat.transcript.erase(frame.through);
      return render();
    case "conv":
      chat.conv = frame.conv;
      return render();
    case "typing":
      if (frame.user === chat.me.id) return;
      chat.typingUntil = frame.on ? Date.now() + TYPING_SHOWN_MS : 0;
      return renderTyping();
    case "joined":
      if (frame.name) chat.names.set(frame.user, frame.name);
      return render();
    default:
      return undefined;
  }
}

/** The shopper can see the conversation: the tab is visible and the frame on screen. */
function looking() {
  return !document.hidden && chat.shown;
}

/** A read receipt for what the shopper sees, and the framing page told what they have not seen. */
function notice() {
  if (chat.conv) markRead();
  const unread = unseen();
  if (unread === chat.unreadTold) return;
  chat.unreadTold = unread;
  chat.embedder.tell({ type: "kefu:unread", count: unread });
}

function markRead() {
  if (!looking() || !chat.transcript.messages.size) return;
  const last = chat.transcript.lastSeq();
  const before = chat.readSent;
  if (last <= before) return;
  chat.readSent = last;
  chat.client.request("receipt", { conv: chat.conv.id, kind: "read", seq: last }).catch(() => (chat.readSent = Math.min(chat.readSent, before)));
}

/** The bot's and agents' messages after the shopper's read receipt. */
function unseen() {
  if (!chat.conv) return 0;
  let count = 0;
  for (const m of chat.transcript.messages.values()) {
    const body = m.body || {};
    if (m.seq > chat.readSent && OTHERS.has(m.role) && body.kind !== "event" && body.kind !== "recalled") count += 1;
  }
  return count;
}

document.addEventListener("visibilitychange", () => chat.ready && notice());

// ---- showing -----------------------------------------------------------------------------

function speaker(m) {
  if (m.role === "bot") return chat.names.get(m.from) || t("bot");
  if (m.role === "agent" || m.role === "supervisor") return chat.names.get(m.from) || t("agent");
  return "";
}

function render() {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const ordered = chat.transcript.ordered();
  const items = ordered.map((m) => {
    const body = m.body || {};
    if (m.role === "system" || body.kind === "event") return el("li", { class: "event", "data-seq": m.seq, text: body.text || "" });
    const own = m.from === chat.me.id;
    const meta = el("div", { class: "meta" }, own ? null : el("span", { text: speaker(m) }), el("time", { text: clock(m.ts) }));
    if (own && body.kind !== "recalled" && chat.client.serverNow() - m.ts < RECALL_WINDOW_MS) {
      meta.append(el("button", { type: "button", class: "link", text: t("recall"), onclick: () => recall(m.seq) }));
    }
    return el("li", { class: `msg ${own ? "own" : m.role}`, "data-seq": m.seq }, meta, renderBody(body, token()));
  });
  for (const [cmid, pending] of chat.pending) {
    const status = pending.error ? el("span", { class: "error", text: t("failed", { e: pending.error }) }) : el("span", { class: "muted", text: t("sending") });
    items.push(el("li", { class: "msg own pending", "data-cmid": cmid }, el("div", { class: "meta" }, status), renderBody(pending.body, token())));
  }
  $("message-list").replaceChildren(...items);
  $("welcome").hidden = items.length > 0;
  $("earlier").hidden = !chat.transcript.more;
  if (atBottom || items.length < 30) box.scrollTop = box.scrollHeight;

  // the bot's suggestions, under its last message while it is the last thing said
  const last = ordered[ordered.length - 1];
  const suggestions = last && last.role === "bot" && Array.isArray(last.body.quick_replies) ? last.body.quick_replies : [];
  $("chips").replaceChildren(...suggestions.map((q) => el("button", { type: "button", class: "chip", text: q, onclick: () => say({ kind: "text", text: q }) })));

  const stage = chat.conv ? chat.conv.stage : "";
  const closed = chat.conv && chat.conv.status === "closed";
  $("human").hidden = closed || stage === "queued" || stage === "assigned";
  $("again").hidden = !closed;
  $("text").disabled = closed;
  $("send").disabled = closed;
  if (closed) $("text").placeholder = t("chat_closed");
  renderSurvey(ordered);
  renderTyping();
}

function renderTyping() {
  const on = chat.typingUntil > Date.now();
  $("typing").hidden = !on;
  if (on) setTimeout(renderTyping, chat.typingUntil - Date.now() + 50);
}

function renderSurvey(ordered) {
  const survey = [...ordered].reverse().find((m) => m.body && m.body.event === "survey");
  const rated = survey && sessionStorage.getItem(`kefu.chat.rated.${chat.conv.id}.${survey.seq}`);
  const open = survey && !rated && (!survey.body.expires_at || survey.body.expires_at > chat.client.serverNow());
  $("survey").hidden = !(open || rated);
  $("survey-form").hidden = !open;
  $("survey-thanks").hidden = !rated;
  if (!open || $("stars").children.length) return;
  $("stars").replaceChildren(...[1, 2, 3, 4, 5].map((score) =>
    el("button", { type: "button", class: "star", role: "radio", "aria-label": String(score), "data-score": score, text: "★", onclick: () => pickScore(score) })));
}

function pickScore(score) {
  chat.score = score;
  for (const star of $("stars").children) star.classList.toggle("on", Number(star.dataset.score) <= score);
  $("survey-send").disabled = false;
}

// ---- acting ------------------------------------------------------------------------------

/** The conversation, opened now if this is the shopper's first message. */
function conversation() {
  if (chat.conv) return Promise.resolve(chat.conv);
  if (!chat.opening) {
    const product = sessionStorage.getItem(PRODUCT_KEY);
    chat.opening = chat.client.request("open", product ? { product } : {}).then(
      (answer) => {
        chat.conv = answer.conv;
        chat.readSent = 0; // a new conversation: its seqs start again
        chat.transcript = new Transcript();
        chat.transcript.loaded = true; // new: every message of it arrives live, from seq 1
        return chat.conv;
      },
      (err) => {
        chat.opening = null;
        throw err;
      },
    );
  }
  return chat.opening;
}

function say(body) {
  const cmid = randomId();
  chat.pending.set(cmid, { body, error: null });
  render();
  conversation()
    .then((conv) => chat.client.send(conv.id, body, cmid))
    .then(
      (ack) => {
        chat.pending.delete(cmid);
        if (!chat.transcript.messages.has(ack.seq)) remember({ conv: ack.conv, seq: ack.seq, cmid, from: chat.me.id, role: "shopper", ts: ack.ts, body });
        chat.client.hold(chat.conv.id, chat.transcript.held());
        render();
        if (body.attachment) refetch(ack.seq); // the stored body has what the gateway read: size, duration…
      },
      (err) => {
        chat.pending.get(cmid).error = `${err.code || ""} ${err.message}`;
        render();
      },
    );
}

async function refetch(seq) {
  const page = await chat.client.request("history", { conv: chat.conv.id, after: seq - 1, limit: 1 });
  for (const m of page.messages) remember(m);
  render();
}

async function recall(seq) {
  try {
    await chat.client.request("recall", { conv: chat.conv.id, seq });
  } catch (err) {
    problem(`${err.code}: ${err.message}`);
  }
}

let recording = null; // the MediaRecorder while a voice message is being recorded

/** Record a voice message until the button is pressed again (or 60 s), then send it. The browser
 * records WebM or Ogg (Opus), which the gateway takes as voice (docs/media.md). */
async function record() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  const started = Date.now();
  const button = $("voice");
  const tick = setInterval(() => (button.textContent = t("voice_stop", { s: Math.round((Date.now() - started) / 1000) })), 250);
  const limit = setTimeout(() => recorder.state === "recording" && recorder.stop(), 60000);
  recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
  recorder.onstop = async () => {
    clearInterval(tick);
    clearTimeout(limit);
    recording = null;
    button.textContent = t("voice_start");
    for (const track of stream.getTracks()) track.stop();
    const type = (recorder.mimeType || "audio/webm").split(";")[0];
    const file = new File(chunks, `voice.${type.endsWith("ogg") ? "ogg" : "webm"}`, { type: type.replace("video/", "audio/") });
    try {
      const conv = await conversation();
      const { id } = await uploadFile(conv.id, file, token(), "voice");
      say({ kind: "voice", attachment: id });
    } catch (err) {
      problem(err.message);
    }
  };
  recorder.start();
  recording = recorder;
  button.textContent = t("voice_stop", { s: 0 });
}

function wire() {
  const text = $("text");
  let typingSent = 0;
  // the widget closes its panel on Escape, which the shop's page does not hear while the chat has the focus
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.isComposing && chat.embedder) chat.embedder.tell({ type: "kefu:close" });
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault(); // an IME's Enter confirms a word instead
      $("composer").requestSubmit();
    }
  });
  text.addEventListener("input", () => {
    if (chat.conv && text.value && Date.now() - typingSent > 3000) {
      typingSent = Date.now();
      chat.client.request("typing", { conv: chat.conv.id, on: true }, 3000).catch(() => {});
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    text.value = "";
    typingSent = 0;
    if (chat.conv) chat.client.request("typing", { conv: chat.conv.id, on: false }, 3000).catch(() => {});
    say({ kind: "text", text: value });
  });
  $("human").addEventListener("click", async () => {
    try {
      const conv = await conversation();
      await chat.client.request("handoff", { conv: conv.id });
    } catch (err) {
      problem(`${err.code}: ${err.message}`);
    }
  });
  $("file").addEventListener("change", async () => {
    const file = $("file").files[0];
    $("file").value = "";
    if (!file) return;
    try {
      const conv = await conversation();
      const { kind, id } = await uploadFile(conv.id, file, token());
      say({ kind, attachment: id });
    } catch (err) {
      problem(err.message);
    }
  });
  $("voice").addEventListener("click", () => (recording ? recording.stop() : record().catch((err) => problem(t("no_microphone", { e: err.message })))));
  $("where").addEventListener("click", () => {
    if (!navigator.geolocation) return problem(t("no_location", { e: "—" }));
    navigator.geolocation.getCurrentPosition(
      (position) => say({ kind: "location", lat: position.coords.latitude, lng: position.coords.longitude, name: t("my_location") }),
      (err) => problem(t("no_location", { e: err.message })),
      { timeout: 10000 },
    );
  });
  $("earlier").addEventListener("click", () => loadHistory(chat.transcript.firstSeq()).then(render));
  $("again").addEventListener("click", () => {
    chat.conv = null;
    chat.opening = null;
    chat.transcript = new Transcript();
    $("text").placeholder = t("chat_composer");
    render();
  });
  $("survey-send").addEventListener("click", async () => {
    const survey = chat.transcript.ordered().filter((m) => m.body && m.body.event === "survey").pop();
    const comment = $("survey-comment").value.trim();
    try {
      await chat.client.request("rate", { conv: chat.conv.id, score: chat.score, ...(comment ? { comment } : {}) });
      sessionStorage.setItem(`kefu.chat.rated.${chat.conv.id}.${survey.seq}`, String(chat.score));
      render();
    } catch (err) {
      problem(`${err.code}: ${err.message}`);
    }
  });
}

start();
