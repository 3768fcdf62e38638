// The Node relay: the baseline's kefu.v1 subset on Node's `ws`, a peer Kefu is benchmarked against.
//
//   node relay.mjs --port 0 --jwt-secret SECRET      # prints "  WebSocket: ws://…/ws"
//
// The same semantics as bench/baseline/relay.py (so the workloads' checks apply unchanged), written
// the way a Node developer would: one `message` callback per connection, msgpack with
// @msgpack/msgpack, the HS256 token verified with node:crypto's HMAC (no JWT library), everything
// in Maps.
//
// * `hello` after a token (`?token=`: HS256 JWT with exp, sub, tenant, role); a bad one gets an
//   `error` `token_invalid` (`token_expired` when it has expired) and close 4001;
// * `resume` goes live: subscribes the user's open conversations, and first writes what each
//   listed conversation holds after the given sequence number;
// * `open` (shoppers) and `join` (agents), with a `joined` notice to the others;
// * `send` -> `ack` with a gap-free per-conversation `seq`; a repeated `cmid` gets the original ack
//   (`dup`) and is not delivered again; `msg` goes to every live connection of every member but the
//   sending one.
//
// `ws.send` queues in call order, so frames to one connection leave in the order they are produced.
// Integers beyond 32 bits (the generator's monotonic send times) are read as BigInt and written back
// unchanged (`useBigInt64`).

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Decoder, Encoder } from "@msgpack/msgpack";
import { WebSocketServer } from "ws";

const PROTOCOL = "kefu.v1";
const encoder = new Encoder({ useBigInt64: true });
const decoder = new Decoder({ useBigInt64: true });
const pack = (value) => Buffer.from(encoder.encode(value));

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 8792, secret: null };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split("=", 2);
    const value = inline ?? argv[++i];
    if (flag === "--host") args.host = value;
    else if (flag === "--port") args.port = Number(value);
    else if (flag === "--jwt-secret") args.secret = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.secret) throw new Error("--jwt-secret is required");
  return args;
}

class TokenExpired extends Error {}

class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// An HS256 JWT's claims, or an exception saying why it is refused.
function verifyToken(token, secret) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("not a JWT");
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  if (header.alg !== "HS256") throw new Error(`algorithm ${header.alg} not allowed`);
  const expected = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new Error("signature verification failed");
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  for (const key of ["exp", "sub", "tenant", "role"]) {
    if (claims[key] === undefined) throw new Error(`token is missing the "${key}" claim`);
  }
  if (typeof claims.exp !== "number") throw new Error('claim "exp" must be a number');
  if (claims.exp <= Date.now() / 1000) throw new TokenExpired("signature has expired");
  return claims;
}

class Conversation {
  constructor(id, tenant, customer, channel, subject) {
    this.id = id;
    this.tenant = tenant;
    this.customer = customer;
    this.channel = channel;
    this.subject = subject;
    this.status = "open";
    this.createdAt = Date.now();
    this.members = new Map(); // user -> [role, joined_at]
    this.messages = []; // packed msg frames; seq n is messages[n - 1]
    this.cmids = new Map(); // cmid -> [seq, ts]
    this.live = new Set(); // sessions receiving live deliveries
  }

  asMap() {
    return {
      id: this.id, tenant: this.tenant, customer: this.customer, channel: this.channel, status: this.status,
      subject: this.subject, created_at: this.createdAt, last_seq: this.messages.length,
    };
  }

  participants() {
    return [...this.members].map(([user, [role, joinedAt]]) => ({ user, role, joined_at: joinedAt }));
  }
}

class Relay {
  constructor(secret) {
    this.secret = secret;
    this.convs = new Map();
    this.userConvs = new Map(); // "tenant\0user" -> Set of conversation ids
    this.sessions = new Map(); // "tenant\0user" -> Set of sessions
    this.ids = 0;
  }

  connect(ws, request) {
    const token = new URL(request.url, "http://relay").searchParams.get("token") ?? "";
    let claims;
    try {
      claims = verifyToken(token, this.secret);
    } catch (err) {
      const code = err instanceof TokenExpired ? "token_expired" : "token_invalid";
      ws.send(pack({ t: "error", id: null, code, message: String(err.message), retryable: false }));
      ws.close(4001, "token_invalid");
      return;
    }
    const session = {
      ws, tenant: claims.tenant, user: claims.sub, role: claims.role, channel: claims.channel ?? "",
      key: `${claims.tenant}\0${claims.sub}`, live: false, convs: new Set(),
    };
    setOf(this.sessions, session.key).add(session);
    ws.send(pack({
      t: "hello", id: null, protocol: PROTOCOL, server: "node-ws", session: `n-${++this.ids}`, server_time: Date.now(),
      user: { id: session.user, tenant: session.tenant, role: session.role, channel: session.channel },
    }));
    ws.on("message", (data, isBinary) => this.request(session, data, isBinary));
    ws.on("close", () => this.forget(session));
    ws.on("error", () => {});
  }

  request(session, data, isBinary) {
    let req = {};
    try {
      if (!isBinary) throw new RequestError("bad_frame", "kefu.v1 frames are binary");
      req = decoder.decode(data);
      const handle = this.handlers[req.t];
      if (handle === undefined) throw new RequestError("unknown_type", `unknown request type ${req.t}`);
      handle.call(this, session, req);
    } catch (err) {
      const known = err instanceof RequestError;
      session.ws.send(pack({
        t: "error", id: known ? req.id ?? null : null, code: known ? err.code : "bad_request", message: String(err.message), retryable: false,
      }));
    }
  }

  forget(session) {
    for (const convId of session.convs) this.convs.get(convId)?.live.delete(session);
    const mine = this.sessions.get(session.key);
    if (mine !== undefined) {
      mine.delete(session);
      if (mine.size === 0) this.sessions.delete(session.key);
    }
  }

  subscribe(session, conv) {
    conv.live.add(session);
    session.convs.add(conv.id);
  }

  conversation(session, convId) {
    const conv = this.convs.get(convId);
    if (conv === undefined || conv.tenant !== session.tenant) throw new RequestError("not_found", "no such conversation");
    return conv;
  }

  resume(session, req) {
    const cursors = req.convs ?? {};
    session.live = true;
    const resumed = {};
    for (const convId of this.userConvs.get(session.key) ?? []) {
      const conv = this.convs.get(convId);
      if (conv.status === "open" && !(convId in cursors)) this.subscribe(session, conv);
    }
    for (const [convId, last] of Object.entries(cursors)) {
      const conv = this.convs.get(convId);
      if (conv === undefined || conv.tenant !== session.tenant || !conv.members.has(session.user)) {
        resumed[convId] = { error: "not_found" };
        continue;
      }
      const missed = conv.messages.slice(Number(last));
      for (const frame of missed) session.ws.send(frame);
      this.subscribe(session, conv);
      resumed[convId] = { sent: missed.length, complete: true, last_seq: conv.messages.length };
    }
    session.ws.send(pack({ t: "ok", id: req.id ?? null, resumed }));
  }

  open(session, req) {
    if (session.role !== "shopper") throw new RequestError("forbidden", "only shoppers open conversations");
    const conv = new Conversation(randomBytes(12).toString("hex"), session.tenant, session.user, session.channel, req.subject ?? "");
    conv.members.set(session.user, [session.role, conv.createdAt]);
    this.convs.set(conv.id, conv);
    setOf(this.userConvs, session.key).add(conv.id);
    for (const other of this.sessions.get(session.key) ?? []) {
      if (other.live || other === session) this.subscribe(other, conv);
    }
    session.ws.send(pack({ t: "ok", id: req.id ?? null, conv: conv.asMap(), participants: conv.participants() }));
  }

  join(session, req) {
    const conv = this.conversation(session, req.conv);
    if (!conv.members.has(session.user)) {
      if (session.role === "shopper") throw new RequestError("not_found", "no such conversation");
      if (conv.status !== "open") throw new RequestError("conversation_closed", "the conversation is closed");
      const joinedAt = Date.now();
      conv.members.set(session.user, [session.role, joinedAt]);
      setOf(this.userConvs, session.key).add(conv.id);
      const notice = pack({ t: "joined", conv: conv.id, user: session.user, role: session.role, ts: joinedAt });
      for (const other of conv.live) if (other.user !== session.user) other.ws.send(notice);
    }
    this.subscribe(session, conv);
    session.ws.send(pack({ t: "ok", id: req.id ?? null, conv: conv.asMap(), participants: conv.participants() }));
  }

  send(session, req) {
    const conv = this.conversation(session, req.conv);
    if (!conv.members.has(session.user)) throw new RequestError("forbidden", "not a participant");
    if (conv.status !== "open") throw new RequestError("conversation_closed", "the conversation is closed");
    const { cmid, body } = req;
    if (typeof cmid !== "string" || body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new RequestError("bad_request", "cmid must be a string and body a map");
    }
    const known = conv.cmids.get(cmid);
    if (known !== undefined) {
      session.ws.send(pack({ t: "ack", id: req.id ?? null, conv: conv.id, cmid, seq: known[0], ts: known[1], dup: true }));
      return;
    }
    const seq = conv.messages.length + 1;
    const ts = Date.now();
    const frame = pack({ t: "msg", conv: conv.id, seq, cmid, from: session.user, role: session.role, ts, body });
    conv.messages.push(frame);
    conv.cmids.set(cmid, [seq, ts]);
    for (const other of conv.live) if (other !== session) other.ws.send(frame);
    session.ws.send(pack({ t: "ack", id: req.id ?? null, conv: conv.id, cmid, seq, ts, dup: false }));
  }
}

Relay.prototype.handlers = {
  resume: Relay.prototype.resume, open: Relay.prototype.open, join: Relay.prototype.join, send: Relay.prototype.send,
};

function setOf(map, key) {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  return set;
}

const args = parseArgs(process.argv.slice(2));
const relay = new Relay(args.secret);
const server = new WebSocketServer({
  host: args.host, port: args.port, backlog: 4096, maxPayload: 65536, perMessageDeflate: false, clientTracking: false,
  handleProtocols: (protocols) => (protocols.has(PROTOCOL) ? PROTOCOL : false),
});
server.on("connection", (ws, request) => relay.connect(ws, request));
server.on("listening", () => {
  console.log(`node relay (ws ${process.versions.node}) listening`);
  console.log(`  WebSocket: ws://${args.host}:${server.address().port}/ws  (subprotocol ${PROTOCOL})`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
