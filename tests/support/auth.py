"""Credentials other than the test client's token: a browser's login, and an
authorizer that refuses chosen actions (the ``denied_actions`` fixture)."""

from __future__ import annotations

import urllib.parse
from http.cookies import SimpleCookie
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from traitlets import List, Unicode

#: No credentials at all: jp_fetch only adds its token header when none is given.
NO_AUTH = {"Authorization": ""}


class DenyingAuthorizer(Authorizer):
    """Allows everything except the configured actions on the ``terminals`` resource.

    Modelled on jupyter_server's own tests/auth/test_authorizer.py, which plugs a
    custom Authorizer in through ``ServerApp.authorizer_class``.
    """

    denied_actions = List(Unicode(), help="Actions refused on the terminals resource.").tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource == "terminals" and action in self.denied_actions)


def cookies_of(response: Any) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items() if morsel.value}


async def browser_login(jp_fetch: Any, token: str) -> tuple[str, str]:
    """Log in as a browser does: the login page sets ``_xsrf``; posting the token as the
    password sets the login cookie. Returns (Cookie header, the _xsrf value)."""
    page = await jp_fetch("login", headers=dict(NO_AUTH), raise_error=False, follow_redirects=False)
    assert page.code == 200, page.code
    xsrf = cookies_of(page)["_xsrf"]
    form = urllib.parse.urlencode({"password": token, "_xsrf": xsrf})
    done = await jp_fetch("login", method="POST", body=form, raise_error=False, follow_redirects=False,
                          headers={**NO_AUTH, "Cookie": f"_xsrf={xsrf}",
                                   "Content-Type": "application/x-www-form-urlencoded"})
    assert done.code == 302, (done.code, done.body[:300])
    login = {k: v for k, v in cookies_of(done).items() if k.startswith("username-")}
    assert len(login) == 1, cookies_of(done)
    (name, value), = login.items()
    return f"{name}={value}; _xsrf={xsrf}", xsrf
