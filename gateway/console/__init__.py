"""The agent console: a browser workspace served at ``/console/`` on the HTTP port.

It is static files (HTML, CSS and plain ES modules, no build step) that speak kefu.v1 over the
WebSocket like any other client, and call the media endpoints with the same client token: the
gateway gives the console no rights a client does not have. The token never reaches a server log:
the page takes it from the URL's fragment (``/console/#token=…``, which browsers do not send) or a
form, and keeps it in the tab's ``sessionStorage``.

The files are read once and served from memory with a strict Content-Security-Policy (scripts
and styles from the page's origin only), so text a shopper writes can never run as script even if
the page's own escaping failed. docs/console.md describes it.
"""

from .pages import CONTENT_SECURITY_POLICY, PREFIX, routes

__all__ = ["CONTENT_SECURITY_POLICY", "PREFIX", "routes"]
