// The window that frames a page (a shop's page around the chat, the widget among them): who it may
// be, and how the page talks with it over postMessage. Both ways go through the same rule: the
// page hears only its own parent window at an origin the gateway lets frame the page
// (`--allowed-origins`; any when that list is empty, as for framing), and posts only to such an
// origin. What the page posts says how things stand (an expiry, a count), never a token or a
// message's text: any site may frame the chat when no list is given.

/** Whether `origin` (`https://shop.example`) is what a CSP source `allowed` names, a leading
 * `*.` standing for any subdomain (`https://*.shop.example`) and a lone `*` for any host, as
 * frame-ancestors reads it. */
export function originMatches(origin, allowed) {
  if (!allowed.includes("*")) return origin === allowed;
  const [scheme, rest] = allowed.split("://");
  if (rest === "*") return origin.startsWith(`${scheme}://`); // any host of the scheme
  if (!rest || !rest.startsWith("*.") || rest.slice(2).includes("*")) return false;
  return origin.startsWith(`${scheme}://`) && origin.endsWith(rest.slice(1)) && origin.length > scheme.length + 3 + rest.length - 1;
}

export class Embedder {
  /** @param {string[]|null} parents the origins that may frame the page (null: any) */
  constructor(parents) {
    this.parents = parents;
    this.framed = window.parent !== window;
  }

  /** Whether a message event comes from the parent window at an origin that may frame the page. */
  accepts(event) {
    return this.framed && event.source === window.parent && this.allows(event.origin);
  }

  allows(origin) {
    return this.parents === null || this.parents.some((allowed) => originMatches(origin, allowed));
  }

  /** Call `handler(data)` for each message of `type` the parent sends; returns what stops it. */
  on(type, handler) {
    const listener = (event) => {
      if (this.accepts(event) && event.data && event.data.type === type) handler(event.data, event);
    };
    window.addEventListener("message", listener);
    return () => window.removeEventListener("message", listener);
  }

  /** Post `message` to the parent: to `origin` (an answer to a message from it), or to wherever
   * the parent may be. Nothing when the page is not framed. */
  tell(message, origin = null) {
    if (!this.framed) return;
    for (const target of origin ? [origin] : this.targets()) window.parent.postMessage(message, target);
  }

  targets() {
    if (this.parents === null) return ["*"];
    // Chromium and Safari say who the parent is; otherwise each allowed origin is tried (the
    // browser delivers to the one the parent has) except patterns, which no window's origin equals
    const parent = location.ancestorOrigins && location.ancestorOrigins[0];
    if (parent && this.allows(parent)) return [parent];
    return this.parents.filter((allowed) => !allowed.includes("*"));
  }
}
