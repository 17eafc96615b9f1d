"""The Jupyter server extension: configuration, wiring, and shutdown."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Int, Type

from . import handlers, pages
from ..manager import LabSessionManager

#: Where kernels started by this server find it (see ``labkernel.client``).
URL_ENV = "LABKERNEL_URL"
TOKEN_ENV = "LABKERNEL_TOKEN"


class LabKernelApp(ExtensionApp):
    """Serves lab sessions over the REST API of ``openapi.yaml``."""

    name = "labkernel"

    # The browser bundle (widget and lab page), built from js/ into the package.
    static_paths = [str(Path(__file__).parent.parent / "static")]

    manager_class = Type(
        default_value=LabSessionManager, klass=LabSessionManager,
        help="The session manager class to use.",
    ).tag(config=True)

    max_body_size = Int(
        64 * 1024, help="The largest request body accepted, in bytes; larger answers 413.",
    ).tag(config=True)

    def initialize_settings(self) -> None:
        self.manager = self.manager_class(parent=self.serverapp, root_dir=self.serverapp.root_dir,
                                          log=self.log)
        self.settings["labkernel_manager"] = self.manager
        # The port is only final once the server has bound it, when the loop runs.
        self.serverapp.io_loop.add_callback(self._export_credentials)
        # Find the labs and fill their warm pools before the first learner asks.
        self.serverapp.io_loop.add_callback(self.manager.warm_up)

    def initialize_handlers(self) -> None:
        self.handlers.extend(pages.handlers)
        if not self.serverapp.terminals_enabled:
            # A lab session is a shell: where terminals are off, labs are off too.
            self.log.info("labkernel: terminals are disabled on this server, so lab sessions are too")
            self.handlers.extend(handlers.disabled_handlers)
            return
        self.handlers.extend(handlers.default_handlers)

    def _export_credentials(self) -> None:
        """Let kernels this server starts find it: ``LabClient()`` needs no arguments."""
        os.environ[URL_ENV] = self.serverapp.connection_url
        token = self.serverapp.identity_provider.token
        if token:
            os.environ[TOKEN_ENV] = token
        else:
            # Behind JupyterHub the kernel holds JUPYTERHUB_API_TOKEN already.
            os.environ.pop(TOKEN_ENV, None)

    async def stop_extension(self) -> None:
        """Stop every session and wait until all their processes are gone."""
        await self.manager.shutdown()
