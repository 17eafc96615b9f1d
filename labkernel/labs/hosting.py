"""What this server offers its labs, as the catalog tells clients: links to the
ports of a lab's machine, and which of a lab's needs (``model.NEEDS``) it meets.

Both go into every ``GET /api/labs`` answer, so both are cheap: what is found on
the machine is looked up at most once per ``RECHECK`` seconds (a few ``stat`` calls
and one small ``/proc`` read, never a subprocess or a network call), and only labs
whose Markdown has port placeholders (``Lab.links``) are rewritten.

Links. Killercoda's ``{{TRAFFIC_HOST1_8080}}`` (and Katacoda's
``[[HOST_SUBDOMAIN]]-8080-[[KATACODA_HOST]]`` addresses) lead to a port of the
lab's machine. Here that machine is the server's: a browser reaches the port
through jupyter-server-proxy, at ``{base_url}proxy/8080/``, where that package is
importable in the server; else it gets ``http://localhost:8080``, which works where
the browser runs on the server's machine. The lab's shell always uses
``http://localhost:8080`` (the proxy would want the learner's Jupyter credentials),
so code spans, code blocks and scripts get that form when the lab is read
(``killercoda.load_scenario``) and only the prose is rewritten here.

Needs, as met here (a need not met is listed in the lab's ``unmetNeeds``; the lab
panel and ``labkernel test`` say so):

- ``root``: the session is the sandbox's root (containment mode ``sandbox``). A
  root server in another mode is not counted: the lab's writes would land on the
  host itself.
- ``docker``: ``docker`` on PATH and a daemon's socket (``DOCKER_HOST``, or
  ``/var/run/docker.sock``, ``/run/docker.sock``), or ``podman`` on PATH (which
  needs no daemon). The CLI alone (this machine has one) runs nothing.
- ``kubernetes``: ``kubectl`` on PATH and a kubeconfig (``KUBECONFIG`` or
  ``~/.kube/config``): a cluster to talk to, not merely the client.
- ``systemd``: ``systemctl`` on PATH and systemd running (``/run/systemd/system``,
  what ``sd_booted`` tests).
- ``internet``: a default route (``/proc/net/route``, ``/proc/net/ipv6_route``).
  That says a way out exists, not that every host is reachable through it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .killercoda import localhost, port_links
from .model import NEEDS

#: Seconds what was found on the machine is trusted before it is looked up again.
RECHECK = 60.0


@dataclass(frozen=True)
class Here:
    """This server, as the catalog's answer needs it: see the module docstring."""

    #: The server's base URL, ending in ``/``.
    base_url: str = "/"
    #: Whether jupyter-server-proxy is importable (ports are then reached through it).
    proxy: bool = False
    #: The needs this server meets.
    met: frozenset[str] = frozenset()

    def port_url(self, port: int) -> str:
        """A port of the lab's machine as the learner's browser reaches it."""
        return f"{self.base_url}proxy/{port}/" if self.proxy else localhost(port)

    def links(self, markdown: str) -> str:
        """``markdown`` with its port placeholders made this server's addresses."""
        if not markdown or ("TRAFFIC_HOST" not in markdown and "[[HOST" not in markdown):
            return markdown  # most texts: no regex over them
        # A relative address on its own in prose is no link to CommonMark: it is made one.
        return port_links(markdown, self.port_url, wrap=self.proxy)

    def unmet(self, needs: Iterable[str]) -> list[str]:
        return [n for n in needs if n not in self.met]


_found: tuple[float, frozenset[str], bool] | None = None


def _machine() -> tuple[frozenset[str], bool]:
    """What the machine has (needs met but root; whether the proxy is importable),
    looked up at most once per ``RECHECK`` seconds."""
    global _found
    now = time.monotonic()
    if _found is None or now - _found[0] > RECHECK:
        _found = (now, frozenset(n for n, test in _TESTS.items() if _safely(test)), _proxy_importable())
    return _found[1], _found[2]


def here(base_url: str, containment_mode: str) -> Here:
    """This server as the catalog describes it to clients (cheap: see the module docstring)."""
    met, proxy = _machine()
    if containment_mode == "sandbox":
        met = met | {"root"}
    return Here(base_url if base_url.endswith("/") else base_url + "/", proxy, met)


def forget() -> None:
    """Look the machine up again at the next ``here`` (tests, after changing PATH)."""
    global _found
    _found = None


def _proxy_importable() -> bool:
    try:
        return importlib.util.find_spec("jupyter_server_proxy") is not None
    except (ImportError, ValueError):
        return False


def _safely(test: Callable[[], bool]) -> bool:
    try:
        return test()
    except OSError:
        return False


def _docker() -> bool:
    if shutil.which("podman"):
        return True
    if not shutil.which("docker"):
        return False
    return bool(os.environ.get("DOCKER_HOST")) or any(
        os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock"))


def _kubernetes() -> bool:
    if not shutil.which("kubectl"):
        return False
    config = os.environ.get("KUBECONFIG", "")
    paths = [p for p in config.split(os.pathsep) if p] or [os.path.expanduser("~/.kube/config")]
    return any(os.path.isfile(p) for p in paths)


def _systemd() -> bool:
    return bool(shutil.which("systemctl")) and os.path.isdir("/run/systemd/system")


def _internet() -> bool:
    with open("/proc/net/route", encoding="ascii", errors="replace") as f:
        # Iface Destination Gateway …: a default route has destination 00000000.
        if any(line.split()[1:2] == ["00000000"] for line in f.readlines()[1:]):
            return True
    try:
        with open("/proc/net/ipv6_route", encoding="ascii", errors="replace") as f:
            # destination ::/0 through a device other than lo.
            return any(line.startswith("0" * 32 + " 00 ") and not line.rstrip().endswith(" lo")
                       for line in f)
    except OSError:
        return False


_TESTS = {"kubernetes": _kubernetes, "docker": _docker, "systemd": _systemd, "internet": _internet}
assert set(_TESTS) | {"root"} == set(NEEDS)
