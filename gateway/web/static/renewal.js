// A client token ends (`exp`; `POST /v1/tokens` gives an hour by default), and a chat or an
// agent's shift may last longer. The pages cannot mint tokens: the shop's backend does. So before
// the token ends, a page asks the window that embeds it for a new one, and takes one whenever that
// window sends it (docs/chat.md, "Keeping the session"):
//
//   page -> parent   {type: "kefu:token-expiring", expires_at}   two minutes before, then every 30 s
//   parent -> page   {type: "kefu:token", token}                 any time
//   page -> parent   {type: "kefu:token-renewed", expires_at} or {type: "kefu:token-refused", code}
//
// A token is taken only from the page's own parent window, and only from an origin the gateway
// lets frame the page. The page hands it to the live connection (`auth`: the server checks it is
// the same user's) and uses it for every reconnect and upload from then on. Who the parent may be,
// and where the page's answers go, is embedder.js's rule.

import { Embedder } from "./embedder.js";

const LEAD_MS = 120000; // ask this long before the end
const AGAIN_MS = 30000; // and again this often until a token comes or the old one ends

/** The expiry (`exp`, seconds since the epoch) a JWT states, or null. Read, not verified: the
 * server verifies; the page only needs to know when to ask. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

export class TokenRenewal {
  /**
   * @param {object} options
   * @param {() => string|null} options.current the token in use
   * @param {(token: string) => Promise<number>} options.use puts a new token in use (the client's
   *   `renew`): resolves with its expiry, or rejects with the server's refusal
   * @param {string[]|null} options.parents the origins a parent may send tokens from (null: any)
   * @param {(secondsLeft: number|null) => void} options.onNotice the token nears its end and no
   *   new one came (null: one came)
   */
  constructor({ current, use, parents, onNotice }) {
    this.current = current;
    this.use = use;
    this.onNotice = onNotice;
    this.timer = null;
    this.asked = 0;
    this.embedder = new Embedder(parents);
    this.framed = this.embedder.framed;
    this.unlisten = null;
  }

  start() {
    this.unlisten = this.embedder.on("kefu:token", (data, event) => this.receive(data, event.origin));
    this.schedule();
  }

  stop() {
    if (this.unlisten) this.unlisten();
    clearTimeout(this.timer);
  }

  schedule() {
    clearTimeout(this.timer);
    this.asked = 0;
    const exp = tokenExpiry(this.current() || "");
    if (exp === null) return;
    this.timer = setTimeout(() => this.ask(), Math.max(0, exp * 1000 - Date.now() - LEAD_MS));
  }

  ask() {
    const exp = tokenExpiry(this.current() || "");
    const left = exp === null ? 0 : exp * 1000 - Date.now();
    if (left <= 0) return; // the server closes the connection (token_expired): the page says so
    this.asked += 1;
    if (this.framed) this.tell({ type: "kefu:token-expiring", expires_at: exp });
    // framed, the parent usually answers at once: the notice is for when nobody does
    if (!this.framed || this.asked > 1) this.onNotice(Math.ceil(left / 1000));
    this.timer = setTimeout(() => this.ask(), Math.min(AGAIN_MS, left));
  }

  async receive(data, origin) {
    if (typeof data.token !== "string") return;
    try {
      const exp = await this.use(data.token);
      this.onNotice(null);
      this.schedule();
      this.tell({ type: "kefu:token-renewed", expires_at: exp }, origin);
    } catch (err) {
      this.tell({ type: "kefu:token-refused", code: err.code || "token_invalid", message: err.message }, origin);
    }
  }

  tell(message, origin = null) {
    this.embedder.tell(message, origin); // only the expiry and the outcome go out, never a token
  }
}
