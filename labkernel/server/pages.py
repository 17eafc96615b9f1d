"""The stand-alone lab page: a terminal on a page of its own, behind Jupyter's login.

``{base_url}labkernel/labs/{labId}`` starts a session of that lab (and, reloaded,
attaches again to the one it started: the browser remembers it per lab);
``{base_url}labkernel/sessions/{sessionId}`` attaches to a running session. The
page loads the same bundle as the notebook widget from the extension's static
files and talks to the same REST API with long polls and POSTs: no WebSocket,
so it works where a proxy allows none, and it makes a plain link for a workshop.
"""

from __future__ import annotations

import html
import json
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
<style>
  html, body {{ height: 100%; margin: 0; }}
  body {{ display: flex; flex-direction: column; background: #111; }}
  @media (prefers-color-scheme: light) {{ body {{ background: #fff; }} }}
  #labkernel-page {{ flex: 1 1 auto; min-height: 0; padding: 6px; box-sizing: border-box; }}
</style>
<script id="jupyter-config-data" type="application/json">{config}</script>
<script type="module" src="{js}"></script>
</head>
<body>
<div id="labkernel-page"></div>
<noscript>This lab page needs JavaScript.</noscript>
</body>
</html>
"""


class LabPageHandler(ExtensionHandlerMixin, JupyterHandler):
    """``GET labkernel/labs/{labId}`` and ``labkernel/sessions/{sessionId}``."""

    def compute_etag(self) -> None:
        return None

    def _page(self, *, lab_id: str = "", session_id: str = "") -> None:
        # Reading xsrf_token sets the _xsrf cookie that the page's POSTs send back.
        self.xsrf_token  # noqa: B018
        config = {
            "baseUrl": self.base_url,
            "labId": lab_id,
            "sessionId": session_id,
            "title": lab_id or "Lab session",
        }
        # In a <script> element only "</" can end it early.
        text = json.dumps(config).replace("</", "<\\/")
        self.set_header("Cache-Control", "no-store")
        self.finish(_PAGE.format(
            title=html.escape(f"{lab_id or 'Lab session'} · labkernel"),
            css=html.escape(self.static_url("page.css")),
            js=html.escape(self.static_url("page.js")),
            config=text,
        ))


class LabPage(LabPageHandler):
    """Starts a session of a lab (or attaches to the one this browser started)."""

    @web.authenticated
    def get(self, lab_id: str) -> None:
        self._page(lab_id=lab_id)


class SessionPage(LabPageHandler):
    """Attaches to a running session."""

    @web.authenticated
    def get(self, session_id: str) -> None:
        self._page(session_id=session_id)


handlers: list[tuple[str, Any]] = [
    (r"/labkernel/labs/([^/]+)", LabPage),
    (r"/labkernel/sessions/([^/]+)", SessionPage),
]
