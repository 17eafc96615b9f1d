"""The server's credentials, kept out of lab shells.

The extension exports the server's URL and token for the kernels it starts
(``LabClient()`` needs no arguments there), and under JupyterHub the server holds
an API token of its own. A lab shell that inherited them could drive the whole
Jupyter API: start kernels, read files, read and type into other sessions. So a
session starts from the server's environment less these names.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Mapping

#: Always withheld: this extension's token for kernels, the server's own token
#: (read from the environment by jupyter_server), JupyterHub's API token and its
#: old name.
CREDENTIAL_ENV = ("LABKERNEL_TOKEN", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def is_credential(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether ``name`` is one of the names above or matches one of ``extra`` (fnmatch patterns)."""
    return any(fnmatchcase(name, pattern) for pattern in (*CREDENTIAL_ENV, *extra))


def without_credentials(env: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """``env`` less every credential: the names above and ``extra`` (fnmatch patterns).

    Both the environment a session starts from and the values a lab's ``[env]``
    takes with ``${NAME}`` come from it (``labs.workspace``)."""
    extra = tuple(extra)
    return {name: value for name, value in env.items() if not is_credential(name, extra)}
