// An agent is often looking elsewhere: the shop's order pages, another conversation, another
// window. A shopper newly assigned to them, or a message from one of their shoppers in a
// conversation they are not looking at, is then told with a desktop notification and a short tone
// (docs/console.md, "Alerts"). The agent switches alerts on in the page: the browser asks for
// permission then, and the choice is kept in this browser.

const KEY = "kefu.console.alerts";

export class Alerts {
  /** @param {(conv: string) => void} onOpen what a click on a notification does: show that conversation */
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.audio = null;
  }

  get supported() {
    return typeof Notification !== "undefined";
  }

  get on() {
    return this.supported && Notification.permission === "granted" && localStorage.getItem(KEY) === "on";
  }

  /** Switch alerts on (asking the browser's permission) or off; resolves with whether they are on. */
  async toggle() {
    if (this.on) {
      localStorage.setItem(KEY, "off");
      return false;
    }
    if (!this.supported) return false;
    const permission = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    localStorage.setItem(KEY, permission === "granted" ? "on" : "off");
    return this.on;
  }

  /** Tell the agent, unless they are looking at `conv` already. */
  tell(conv, title, body, lookingAt) {
    if (!this.on) return;
    if (lookingAt === conv && !document.hidden && document.hasFocus()) return;
    const shown = new Notification(title, { body, tag: `kefu-${conv}` });
    shown.onclick = () => {
      window.focus();
      this.onOpen(conv);
      shown.close();
    };
    this.tone();
  }

  /** Two short notes, made here: no sound file to fetch. */
  tone() {
    try {
      this.audio = this.audio || new AudioContext();
      const now = this.audio.currentTime;
      for (const [at, hz] of [[0, 880], [0.16, 1175]]) {
        const note = this.audio.createOscillator();
        const level = this.audio.createGain();
        note.frequency.value = hz;
        level.gain.setValueAtTime(0.0001, now + at);
        level.gain.exponentialRampToValueAtTime(0.2, now + at + 0.02);
        level.gain.exponentialRampToValueAtTime(0.0001, now + at + 0.14);
        note.connect(level).connect(this.audio.destination);
        note.start(now + at);
        note.stop(now + at + 0.15);
      }
    } catch {
      // no audio output (or the browser wants a gesture first): the notification is enough
    }
  }
}
