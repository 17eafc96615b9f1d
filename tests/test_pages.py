"""The stand-alone lab page, at the HTTP level, against the real server.

What the page does in a browser (start, attach, remember its session, no
WebSocket) is for the browser tests; here: the login, the page, the bundle.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from support.auth import NO_AUTH, browser_login


def config_of(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, html[:500]
    return json.loads(match.group(1))


@pytest.mark.parametrize("path", [("labkernel", "labs", "shell"), ("labkernel", "sessions", "some-id")])
async def test_an_unauthenticated_visitor_is_sent_to_the_login_page(jp_fetch: Any, jp_base_url: str,
                                                                    path: tuple[str, ...]) -> None:
    page = await jp_fetch(*path, headers=dict(NO_AUTH), raise_error=False, follow_redirects=False)
    assert page.code == 302
    location = page.headers["Location"]
    assert location.startswith(f"{jp_base_url}login?next="), location
    assert "labkernel" not in page.body.decode()


async def test_the_lab_page_loads_the_bundle_under_the_base_url(jp_fetch: Any, jp_base_url: str,
                                                                jp_serverapp: Any) -> None:
    cookie, _ = await browser_login(jp_fetch, jp_serverapp.identity_provider.token)
    page = await jp_fetch("labkernel", "labs", "shell", headers={**NO_AUTH, "Cookie": cookie})
    html = page.body.decode()
    assert page.headers["Content-Type"].startswith("text/html")
    assert config_of(html) == {"baseUrl": jp_base_url, "labId": "shell", "sessionId": "",
                               "title": "shell"}
    scripts = re.findall(r'<script type="module" src="([^"]+)">', html)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)">', html)
    assert [s.split("?")[0] for s in scripts] == [f"{jp_base_url}static/labkernel/page.js"]
    assert [s.split("?")[0] for s in styles] == [f"{jp_base_url}static/labkernel/page.css"]
    # Nothing from elsewhere: every URL in the page stays on this server.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "WebSocket" not in html

    # The bundle is there, and it is ours.
    for url in scripts + styles:
        path = url.split("?")[0][len(jp_base_url):]
        asset = await jp_fetch(*path.split("/"), headers={**NO_AUTH, "Cookie": cookie})
        assert asset.code == 200 and len(asset.body) > 1000
    js = await jp_fetch("static", "labkernel", "page.js", headers=dict(NO_AUTH))
    assert b"labkernel-terminal" in js.body
    assert b"new WebSocket" not in js.body


async def test_the_session_page_attaches_and_sets_the_xsrf_cookie(jp_fetch: Any, jp_serverapp: Any) -> None:
    cookie, _ = await browser_login(jp_fetch, jp_serverapp.identity_provider.token)
    page = await jp_fetch("labkernel", "sessions", "abc-123", headers={**NO_AUTH, "Cookie": cookie})
    config = config_of(page.body.decode())
    assert (config["sessionId"], config["labId"]) == ("abc-123", "")
    # A token-authenticated first visit gets an _xsrf cookie for the page's POSTs.
    fresh = await jp_fetch("labkernel", "sessions", "abc-123")
    assert any(c.startswith("_xsrf=") for c in fresh.headers.get_list("Set-Cookie"))


async def test_a_lab_id_cannot_break_out_of_the_page_script(server_url: str, jp_serverapp: Any) -> None:
    # Sent as is (jp_fetch would quote the %): %2F reaches the handler as a "/".
    token = jp_serverapp.identity_provider.token
    page = await AsyncHTTPClient().fetch(
        f"{server_url}labkernel/labs/%3C%2Fscript%3E%3Cscript%3Ealert(1)?token={token}")
    html = page.body.decode()
    assert "</script><script>alert(1)" not in html
    assert config_of(html)["labId"] == "</script><script>alert(1)"
