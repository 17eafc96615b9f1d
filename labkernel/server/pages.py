"""The stand-alone lab page: a terminal on a page of its own, behind Jupyter's login.

``{base_url}labkernel/labs/{labId}`` starts a session of that lab (and, reloaded,
attaches again to the one it started: the browser remembers it per lab);
``{base_url}labkernel/sessions/{sessionId}`` attaches to a running session. The
page loads the same bundle as the notebook widget from the extension's static
files and talks to the same REST API with long polls and POSTs: no WebSocket,
so it works where a proxy allows none, and it makes a plain link for a workshop.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import (
    ExtensionHandlerJinjaMixin,
    ExtensionHandlerMixin,
)
from tornado import web


class PageHandler(ExtensionHandlerJinjaMixin, ExtensionHandlerMixin, JupyterHandler):
    """Base of the two pages: ``templates/lab.html``, configured for a lab or a session.

    The template is rendered by the extension's Jinja environment, which escapes
    every value (see ``LabKernelApp``); its namespace is Jupyter's (``static_url``
    is this extension's, ``base_url`` the server's) and the page's ``title`` and
    ``page_config``.
    """

    def compute_etag(self) -> None:
        return None

    def _page(self, *, lab_id: str = "", session_id: str = "") -> None:
        # Reading xsrf_token sets the _xsrf cookie that the page's POSTs send back.
        self.xsrf_token  # noqa: B018
        title = lab_id or "Lab session"
        page_config = {"baseUrl": self.base_url, "labId": lab_id, "sessionId": session_id, "title": title}
        self.set_header("Cache-Control", "no-store")
        self.finish(self.render_template("lab.html", title=title, page_config=page_config))


class LabPage(PageHandler):
    """Starts a session of a lab (or attaches to the one this browser started)."""

    @web.authenticated
    def get(self, lab_id: str) -> None:
        self._page(lab_id=lab_id)


class SessionPage(PageHandler):
    """Attaches to a running session."""

    @web.authenticated
    def get(self, session_id: str) -> None:
        self._page(session_id=session_id)


page_handlers: list[tuple[str, Any]] = [
    (r"/labkernel/labs/([^/]+)", LabPage),
    (r"/labkernel/sessions/([^/]+)", SessionPage),
]
