"""``from labkernel.client import LabClient``: the public import of the Python client.

The client lives in ``labkernel.clients.client``; this name is kept for notebooks
and scripts that import it from here.
"""

from .clients.client import LabClient, LabError

__all__ = ["LabClient", "LabError"]
