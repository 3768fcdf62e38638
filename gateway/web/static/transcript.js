// A conversation's messages as a page holds them, for both pages: what was fetched and heard,
// recalls applied, and the highest seq held with no gap below it (where a resume continues).

export class Transcript {
  constructor() {
    this.messages = new Map(); // seq -> message
    this.loaded = false; // its newest page was fetched
    this.floor = 0; // messages at or below it were never fetched: what is held runs from it
    this.more = false; // older messages remain to fetch
  }

  /** A message, live or fetched; a `recalled` event hides the message it names. */
  add(m) {
    this.messages.set(m.seq, m);
    const body = m.body || {};
    if (body.kind === "event" && body.event === "recalled") {
      const recalled = this.messages.get(body.seq);
      if (recalled) recalled.body = { kind: "recalled", by: body.by, role: body.role };
    }
  }

  /** A `history` reply: its messages, and, for the first (newest) page, where holding starts. */
  addPage(page) {
    if (!this.loaded && page.messages.length) this.floor = page.messages[0].seq - 1;
    for (const m of page.messages) this.add(m);
    this.more = page.more;
    this.loaded = true;
  }

  /** The shop erased its customer's personal information (`erased`): every body through `through`. */
  erase(through) {
    for (const m of this.messages.values()) if (m.seq <= through) m.body = { kind: "erased" };
  }

  held() {
    let seq = this.floor;
    while (this.messages.has(seq + 1)) seq += 1;
    return seq;
  }

  ordered() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  lastSeq() {
    return this.messages.size ? Math.max(...this.messages.keys()) : 0;
  }

  firstSeq() {
    return Math.min(...this.messages.keys());
  }
}
