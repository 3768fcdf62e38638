// What both pages show of a message body, and how they upload a file: text is only ever set as
// textContent, attachments are fetched with the page's own token for short-lived signed URLs.

import { duration, t } from "./i18n.js";

/** An element with text (never markup) and attributes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function clock(ms) {
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

function size(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1048576) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

/** A message body as the page shows it. */
export function renderBody(body, token) {
  switch (body.kind) {
    case "text":
      return el("div", { class: "text", text: body.text });
    case "recalled":
      return el("div", { class: "muted", text: t("recalled") });
    case "erased":
      return el("div", { class: "muted", text: t("erased") });
    case "location": {
      const where = `${Number(body.lat).toFixed(5)}, ${Number(body.lng).toFixed(5)}`;
      return el("div", { class: "location" },
        el("strong", { text: `📍 ${body.name || t("location")}` }),
        body.address ? el("div", { text: body.address }) : null,
        el("div", { class: "muted", text: where }));
    }
    case "image":
    case "video":
    case "voice":
    case "file":
      return body.attachment ? renderAttachment(body, token) : el("a", { href: safeUrl(body.url), target: "_blank", rel: "noopener noreferrer", text: body.name || body.url });
    default:
      return el("div", { class: "muted", text: `[${body.kind}]` });
  }
}

function safeUrl(url) {
  return /^https?:\/\//i.test(url || "") ? url : "#";
}

/** An attachment's signed URLs, asked for once per attachment until they expire. */
const attachments = new Map(); // attachment id -> {promise, expires}

function attachment(id, token) {
  const cached = attachments.get(id);
  if (cached && cached.expires > Date.now() / 1000 + 30) return cached.promise;
  const promise = fetch(`/v1/attachments/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${token}` } })
    .then(async (answer) => {
      const doc = await answer.json();
      if (!answer.ok) throw new Error(doc.code || answer.status);
      return doc;
    });
  attachments.set(id, { promise, expires: Date.now() / 1000 + 240 });
  promise.then((doc) => attachments.set(id, { promise, expires: doc.urls_expire_at }), () => attachments.delete(id));
  return promise;
}

function renderAttachment(body, token) {
  const box = el("div", { class: `attachment ${body.kind}`, "data-attachment": body.attachment });
  const caption = [body.name, size(body.size), body.duration_ms ? duration(body.duration_ms) : null].filter(Boolean).join(" · ");
  attachment(body.attachment, token).then(
    (doc) => {
      if (body.kind === "image") {
        const img = el("img", { src: doc.thumbnail_url || doc.display_url, alt: body.name || "image", width: body.w, height: body.h, class: "thumb" });
        box.append(el("a", { href: doc.display_url || doc.url, target: "_blank", rel: "noopener" }, img));
      } else if (body.kind === "video") {
        box.append(el("video", { src: doc.url, controls: true, preload: "metadata", poster: doc.thumbnail_url }));
      } else if (body.kind === "voice") {
        box.append(el("audio", { src: doc.url, controls: true, preload: "metadata" }));
      } else {
        box.append(el("a", { href: doc.url, download: body.name || "file", text: `📎 ${body.name || doc.name || "file"}` }));
      }
      box.append(el("div", { class: "muted", text: caption }));
    },
    (err) => box.append(el("div", { class: "error", text: `${body.kind}: ${err.message}` })),
  );
  return box;
}

function kindOf(file) {
  if (file.type.startsWith("image/")) return "image";
  if (file.type.startsWith("video/")) return "video";
  if (file.type.startsWith("audio/")) return "voice";
  return "file";
}

/** Upload a file into a conversation (its kind by its type unless given): resolves with {kind, id}. */
export async function uploadFile(conv, file, token, kind = kindOf(file)) {
  const answer = await fetch(`/v1/conversations/${encodeURIComponent(conv)}/attachments?kind=${kind}&name=${encodeURIComponent(file.name)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: file,
  });
  const doc = await answer.json();
  if (!answer.ok) throw new Error(t("upload_failed", { e: `${doc.code}: ${doc.detail || doc.title}` }));
  attachments.set(doc.id, { promise: Promise.resolve(doc), expires: doc.urls_expire_at });
  return { kind, id: doc.id };
}
