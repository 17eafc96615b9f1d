"""labkernel: hands-on shell labs inside Jupyter, over plain HTTP long polling."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Names of ``labkernel.clients.lab`` importable from ``labkernel`` itself.
_LAB_NAMES = ("Lab", "RunResult", "CheckReport", "CommandFailed", "LabTimeout", "LabBusy",
              "LabEnded", "IncompleteCommand")


def __getattr__(name: str) -> Any:
    # Imported on first use: the server extension must not pull in ipywidgets.
    if name == "Terminal":
        from .clients.widget import Terminal

        return Terminal
    if name == "LabPanel":
        from .clients.panel import LabPanel

        return LabPanel
    if name in _LAB_NAMES:
        from .clients import lab

        return getattr(lab, name)
    raise AttributeError(f"module 'labkernel' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext labkernel``: the ``%%lab`` cell magic."""
    from .clients.magics import LabMagics

    ipython.register_magics(LabMagics)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import LabKernelApp

    return [{"module": "labkernel.server.app", "app": LabKernelApp}]
