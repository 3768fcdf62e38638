"""The browser pages on the HTTP port: the agent console (``/console/``) and the shopper's chat
(``/chat/``, a page a shop's website embeds in an iframe, by hand or with the widget: the classic
script ``/chat/widget.js`` a shop's page loads from the gateway).

They are static files (HTML, CSS and plain ES modules, no build step) that speak kefu.v1 over the
WebSocket like any other client, and call the media endpoints with the same client token: the
gateway gives a page no rights its token does not have. The token never reaches a server log: a
page takes it from the URL's fragment (``#token=…``, which browsers do not send) or a form, and
keeps it in the tab's ``sessionStorage``.

The files are read once and served from memory with a strict Content-Security-Policy (scripts
and styles from the gateway only), so text someone writes can never run as script even if the
page's own escaping failed. docs/console.md and docs/chat.md describe them.
"""

from .pages import PAGES, Page, content_security_policy, routes

__all__ = ["PAGES", "Page", "content_security_policy", "routes"]
