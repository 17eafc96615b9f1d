"""labkernel: hands-on shell labs inside Jupyter, over plain HTTP long polling."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import LabKernelApp

    return [{"module": "labkernel.app", "app": LabKernelApp}]
