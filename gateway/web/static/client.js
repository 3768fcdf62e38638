// A kefu.v1 client for the browser (docs/protocol.md): msgpack frames over one WebSocket,
// requests matched to their replies by id, and a connection that comes back by itself.
//
// What it promises the page, as the protocol promises any client:
// - a `send` is kept until its `ack` and sent again with the same cmid after a reconnect, so a
//   message typed while the link was down is stored once (the server answers `dup` otherwise);
// - after a reconnect it resumes every conversation it holds messages of from the highest seq it
//   holds (`hold`), so nothing between is missed or repeated (section 6);
// - an authentication refusal (close 4001) is final: it says so and does not retry.

/* global MessagePack */

const NEVER_RETRY = 4001; // the token was refused: retrying with it cannot succeed
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export class KefuError extends Error {
  constructor(code, message, retryable = false) {
    super(message || code);
    this.code = code;
    this.retryable = retryable;
  }
}

export function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Keep what the page's URL fragment says (`#token=…`: a fragment is never sent to a server) in
 * the tab's sessionStorage, `names` mapping each parameter to its key, and take it out of the
 * address bar. */
export function keepFragment(names) {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const [param, key] of Object.entries(names)) if (params.get(param)) sessionStorage.setItem(key, params.get(param));
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}

let settings = null;

/** What the gateway says to its pages (``config.json``), fetched once. */
function pageSettings() {
  settings = settings || fetch("config.json", { cache: "no-store" }).then((answer) => answer.json());
  return settings;
}

/** Where the page's WebSocket is: the gateway says (``config.json``: --web-ws-url, or its port). */
export async function socketUrl() {
  const found = await pageSettings();
  if (found.ws_url) return found.ws_url;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${scheme}://${host}:${found.ws_port}${found.ws_path}`;
}

/** The origins that may frame the page and so send it tokens (``config.json``: the chat's
 * --allowed-origins, ``'self'`` for the console), or null: any. */
export async function frameParents() {
  const found = await pageSettings();
  return found.parents === null ? null : found.parents.map((origin) => (origin === "'self'" ? location.origin : origin));
}

export class KefuClient {
  /**
   * @param {string} url the WebSocket URL
   * @param {string} token the client token (sent in the `auth` frame, never in the URL)
   * @param {(frame: object) => void} onFrame pushed frames (msg, inbox, assigned, conv, …)
   * @param {(state: string, detail?: object) => void} onState connecting | live | offline | refused
   */
  constructor(url, token, onFrame, onState) {
    this.url = url;
    this.token = token;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.unacked = new Map(); // cmid -> {conv, cmid, body, resolve, reject}
    this.cursors = new Map(); // conv -> highest seq held
    this.hello = null;
    this.liveWaiters = []; // renew() calls waiting for the connection
    this.attempt = 0;
    this.stopped = false;
    this.lastHeard = 0;
    this.watchdog = null;
    this.encoder = new MessagePack.Encoder({ ignoreUndefined: true });
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    if (this.ws) this.ws.close(1000, "logout");
  }

  /** Remember that every message of `conv` up to `seq` is held (with no gap below it): a
   * reconnect resumes after it. */
  hold(conv, seq) {
    if ((this.cursors.get(conv) || 0) < seq) this.cursors.set(conv, seq);
  }

  open() {
    this.onState("connecting", { attempt: this.attempt });
    const ws = new WebSocket(this.url, ["kefu.v1"]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let refused = null;
    ws.onopen = () => {
      const resume = Object.fromEntries(this.cursors);
      this.raw({ t: "auth", id: "auth", token: this.token, resume });
    };
    ws.onmessage = (event) => {
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = MessagePack.decode(new Uint8Array(event.data));
      } catch (err) {
        console.warn("kefu: a frame that is not msgpack", err);
        return;
      }
      if (frame.t === "error" && (frame.id === "auth" || frame.id == null) && /^token_|^tenant_/.test(frame.code)) {
        refused = frame;
      }
      this.dispatch(frame);
    };
    ws.onclose = (event) => {
      clearInterval(this.watchdog);
      const failure = new KefuError("disconnected", "the connection closed", true);
      for (const [, waiter] of this.pending) {
        clearTimeout(waiter.timer);
        waiter.reject(failure);
      }
      this.pending.clear();
      if (this.ws !== ws) return;
      this.ws = null;
      this.hello = null;
      if (event.code === NEVER_RETRY || refused) {
        this.stopped = true;
        this.onState("refused", { code: refused ? refused.code : "token_invalid", message: refused ? refused.message : event.reason });
        return;
      }
      if (this.stopped) return;
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] * (0.75 + Math.random() / 2);
      this.attempt += 1;
      this.onState("offline", { code: event.code, reason: event.reason, retryInMs: Math.round(delay) });
      setTimeout(() => this.stopped || this.open(), delay);
    };
  }

  dispatch(frame) {
    if (frame.t === "hello") {
      this.hello = frame;
      this.clockOffset = frame.server_time - Date.now();
      return;
    }
    if (frame.id === "auth" && frame.t === "ok") {
      // resumed: the catch-up msg frames came before this ok
      for (const [conv, entry] of Object.entries(frame.resumed || {})) {
        if (entry.error) this.cursors.delete(conv);
        if (entry.error === "cursor_ahead") this.cursors.set(conv, entry.last_seq);
      }
      this.attempt = 0;
      this.startWatchdog();
      this.onState("live", { hello: this.hello, resumed: frame.resumed });
      for (const waiter of this.liveWaiters.splice(0)) waiter();
      for (const pending of this.unacked.values()) this.transmit(pending);
      return;
    }
    const waiter = frame.id != null ? this.pending.get(frame.id) : undefined;
    if (waiter && (frame.t === "ok" || frame.t === "ack" || frame.t === "error" || frame.t === "pong")) {
      this.pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.t === "error") waiter.reject(new KefuError(frame.code, frame.message, frame.retryable));
      else waiter.resolve(frame);
      return;
    }
    this.onFrame(frame);
  }

  /** Send an application ping when nothing has arrived for a heartbeat: a dead link is noticed. */
  startWatchdog() {
    clearInterval(this.watchdog);
    const quiet = (this.hello && this.hello.heartbeat_ms) || 25000;
    this.lastHeard = Date.now();
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastHeard < quiet) return;
      this.request("ping", {}, 10000).catch(() => this.ws && this.ws.close(4000, "no pong"));
    }, Math.min(quiet, 15000));
  }

  raw(frame) {
    this.ws.send(this.encoder.encode(frame));
  }

  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.hello !== null;
  }

  /** A request and its answer (`ok`, `pong`), or a KefuError with the protocol's code. */
  request(t, fields = {}, timeoutMs = 15000) {
    if (!this.live) return Promise.reject(new KefuError("disconnected", "not connected", true));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new KefuError("timeout", `no answer to ${t}`, true));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.raw({ ...fields, t, id });
    });
  }

  /** Post a message: resolves with its `ack` once it is durable, however many reconnects that takes. */
  send(conv, body, cmid = randomId()) {
    return new Promise((resolve, reject) => {
      const pending = { conv, cmid, body, resolve, reject };
      this.unacked.set(cmid, pending);
      if (this.live) this.transmit(pending);
    });
  }

  transmit(pending) {
    this.request("send", { conv: pending.conv, cmid: pending.cmid, body: pending.body }).then(
      (ack) => {
        this.unacked.delete(pending.cmid);
        pending.resolve(ack);
      },
      (err) => {
        if (err.code === "disconnected") return; // sent again, same cmid, once live
        if (err.retryable) {
          setTimeout(() => this.live && this.unacked.has(pending.cmid) && this.transmit(pending), 1000);
          return;
        }
        this.unacked.delete(pending.cmid);
        pending.reject(err);
      },
    );
  }

  /** Use a new token from now on: on the live connection at once (`auth`: the server checks it
   * and answers with its expiry, or refuses it and keeps the old one), and for every reconnect.
   * Resolves with the new token's expiry (seconds). */
  async renew(token) {
    if (!this.live) await this.whenLive(15000); // only a live connection can check it
    const ok = await this.request("auth", { token });
    this.token = token;
    return ok.expires_at;
  }

  /** Resolves once the connection is live (at once if it is), or rejects after `timeoutMs`. */
  whenLive(timeoutMs) {
    if (this.live) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.liveWaiters = this.liveWaiters.filter((w) => w !== waiter);
        reject(new KefuError("disconnected", "not connected", true));
      }, timeoutMs);
      this.liveWaiters.push(waiter);
    });
  }

  /** The server's clock now, in ms (message times are the server's). */
  serverNow() {
    return Date.now() + (this.clockOffset || 0);
  }
}
