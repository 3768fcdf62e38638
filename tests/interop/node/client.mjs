// An independent kefu.v1 client on Node's `ws`, run by tests/transport/test_interop.py.
//
//   node client.mjs WS_URL TOKEN
//
// Connects with the kefu.v1 subprotocol (and ws's default permessage-deflate offer, which the
// gateway must decline), then sends, in order:
//   1. {t: "ping", id: 1} as one binary frame;
//   2. {t: "ping", id: 2, pad: 300 x "f"} as a binary message in three fragments, with a control
//      ping (payload "between") between the first two;
//   3. {t: "ping", id: 3, pad: 60,000 x "y"} as one ~60 KB binary frame;
//   4. a text message (kefu.v1 is binary only: the gateway answers with a bad_frame error);
//   5. a 70,000-byte binary message, over the gateway's 65,536-byte limit: it closes with 1009.
// Prints one JSON object: the hello, every message received (msgpack-decoded), the pong payloads
// and the close code and reason. Exits 2 on a timeout or a client-side error.

import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";

const [url, token] = process.argv.slice(2);
const result = { hello: null, messages: [], pongs: [], close: null, errors: [] };

const timer = setTimeout(() => {
  result.errors.push("timed out");
  console.log(JSON.stringify(result));
  process.exit(2);
}, 20000);

const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`, ["kefu.v1"]);
ws.binaryType = "nodebuffer";

// Replies arrive in order; the script waits for the one it needs before sending the next request.
const waiting = [];
function next() {
  return new Promise((resolve) => waiting.push(resolve));
}

ws.on("message", (data, isBinary) => {
  const frame = isBinary ? decode(data) : { text: data.toString() };
  if (result.hello === null) {
    result.hello = frame;
  } else {
    result.messages.push(frame);
  }
  const resolve = waiting.shift();
  if (resolve) resolve(frame);
});
ws.on("pong", (data) => result.pongs.push(data.toString()));
ws.on("error", (err) => result.errors.push(String(err)));
ws.on("close", (code, reason) => {
  result.close = { code, reason: reason.toString(), extensions: ws.extensions, protocol: ws.protocol };
  clearTimeout(timer);
  console.log(JSON.stringify(result));
  process.exit(result.errors.length ? 2 : 0);
});

// Send a msgpack value as several binary frames (RFC 6455 section 5.4): fin only on the last one.
function sendFragmented(bytes, cuts, between) {
  let start = 0;
  [...cuts, bytes.length].forEach((end, i, all) => {
    ws.send(bytes.subarray(start, end), { binary: true, fin: i === all.length - 1 });
    if (i === 0) between();
    start = end;
  });
}

ws.on("open", async () => {
  await next(); // hello
  ws.send(encode({ t: "ping", id: 1 }), { binary: true });
  await next();

  const fragmented = encode({ t: "ping", id: 2, pad: "f".repeat(300) });
  sendFragmented(fragmented, [5, 200], () => ws.ping(Buffer.from("between")));
  await next();

  ws.send(encode({ t: "ping", id: 3, pad: "y".repeat(60000) }), { binary: true });
  await next();

  ws.send("not msgpack", { binary: false });
  await next();

  ws.send(Buffer.alloc(70000, 0x78), { binary: true }); // the gateway closes with 1009
});
