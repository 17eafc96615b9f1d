"""The Jupyter server extension: configuration, wiring, and shutdown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp, ExtensionAppJinjaMixin
from jupyter_server.serverapp import ServerApp
from traitlets import Float, Int, TraitError, Type, default, validate
from traitlets.config import Config
from traitlets.config.loader import DeferredConfig

from ..manager import LabSessionManager
from . import handlers, pages, stream

#: Where kernels started by this server find it (see ``labkernel.client``).
URL_ENV = "LABKERNEL_URL"
TOKEN_ENV = "LABKERNEL_TOKEN"

#: HTTP limits that were ``LabSessionManager``'s until they joined the others here;
#: the old names still work, with a warning (see ``_config_moved_from_manager``).
MOVED_FROM_MANAGER = ("max_wait", "batch_delay", "max_answer_size")


class LabKernelApp(ExtensionAppJinjaMixin, ExtensionApp):
    """Serves lab sessions over the REST API of ``openapi.yaml``.

    Its traits are the limits of HTTP (bodies, long polls, answers); the manager's
    are those of sessions and labs.
    """

    name = "labkernel"

    @default("static_paths")
    def _default_static_paths(self) -> list[str]:
        # The browser bundle (widget and lab page), built from js/ into the package.
        return [str(Path(__file__).parent.parent / "static")]

    @default("template_paths")
    def _default_template_paths(self) -> list[str]:
        return [str(Path(__file__).parent / "templates")]

    manager_class = Type(
        default_value=LabSessionManager, klass=LabSessionManager,
        help="The session manager class to use.",
    ).tag(config=True)

    max_body_size = Int(
        64 * 1024, help="The largest request body accepted, in bytes; larger answers 413.",
    ).tag(config=True)

    max_wait = Float(
        25.0, help="""The longest a long poll is held, in seconds; longer `wait`s are
        capped. Keep it under the idle timeout of proxies in front of the server.""",
    ).tag(config=True)

    batch_delay = Float(
        0.008, help="""While a program floods its terminal, how long, in seconds, a poll
        that finds output waiting may hold its answer to gather more: fewer, larger
        answers leave the server time for the other sessions. Half a display frame
        by default; small output such as typing is never held. 0 disables batching.""",
    ).tag(config=True)

    max_answer_size = Int(
        2 * 1024 * 1024, help="""The largest output answer, in characters of its JSON
        `data`: a larger `max` is clamped, and binary output read as UTF-8 text (which
        escapes to up to six times its size) comes in smaller answers.""",
    ).tag(config=True)

    echo_wait = Float(
        0.01, help="""How long, in seconds, the answer to typed input may wait for the output
        that input causes (the terminal's echo), so that the page gets the echo first and
        handles it first. The answer goes as soon as the session writes anything after the
        input, or when this passes (a program that does not echo). 0 answers at once.""",
    ).tag(config=True)

    stream_window = Int(
        512 * 1024, min=stream.MIN_WINDOW, help="""Flow control of output streams
        (`GET /api/ws/stream`): the most bytes of one session sent past what the page said it
        has written to its terminal. It bounds the page's unwritten output and what the server
        has in flight per session; a smaller window asks the page to acknowledge more often.""",
    ).tag(config=True)

    stream_heartbeat = Float(
        15.0, help="""An output stream with nothing to send sends a comment line after this many
        seconds, so that proxies keep it open and the page can tell a stream that stalls.""",
    ).tag(config=True)

    stream_lifetime = Float(
        600.0, help="""How long, in seconds, an output stream stays open; the page then opens the
        next (authentication is checked on each). It also bounds a stream whose client vanished.""",
    ).tag(config=True)

    max_stream_sessions = Int(
        32, min=1, help="The most sessions one output stream reads (one page's terminals).",
    ).tag(config=True)

    max_streams = Int(
        100, min=0, help="""The most output streams open at once on this server (about one per
        open page); beyond it a page reads with long polls.""",
    ).tag(config=True)

    @validate("max_answer_size")
    def _valid_answer_size(self, proposal: Any) -> int:
        if proposal["value"] < 1024:
            raise TraitError("max_answer_size must be at least 1024")
        return int(proposal["value"])

    @property
    def server(self) -> ServerApp:
        """The Jupyter server this extension runs in (set once it is linked)."""
        assert self.serverapp is not None
        return self.serverapp

    def initialize_settings(self) -> None:
        server = self.server
        self.manager = self.manager_class(parent=server, config=self._config_moved_from_manager(),
                                          root_dir=server.root_dir, log=self.log)
        self.settings["labkernel_manager"] = self.manager
        self.streams = stream.StreamRegistry()
        self.settings["labkernel_streams"] = self.streams
        # The port is only final once the server has bound it, when the loop runs.
        server.io_loop.add_callback(self._export_credentials)
        # Find the labs and fill their warm pools before the first learner asks.
        server.io_loop.add_callback(self.manager.warm_up)

    def _config_moved_from_manager(self) -> Config:
        """The server's config for the manager, with the limits that moved here taken.

        ``LabSessionManager.max_wait`` (and ``batch_delay``, ``max_answer_size``), in a
        deployer's config from before, still take effect, with a deprecation warning,
        unless ``LabKernelApp``'s own is set too. The manager gets the config without
        them: it would log them as options it does not recognize.
        """
        config = self.server.config
        moved = [name for name in MOVED_FROM_MANAGER if f"LabSessionManager.{name}" in config]
        if not moved:
            return config
        old = config["LabSessionManager"]
        for name in moved:
            if any(f"{cls.__name__}.{name}" in self.config for cls in type(self).mro()
                   if issubclass(cls, LabKernelApp)):
                self.log.warning("labkernel: LabSessionManager.%s is deprecated and ignored, as "
                                 "LabKernelApp.%s is set too; remove the old one", name, name)
                continue
            value = old[name]
            if isinstance(value, DeferredConfig):  # from the command line, still a string
                value = value.get_value(self.traits()[name])
            setattr(self, name, value)
            self.log.warning("labkernel: LabSessionManager.%s is deprecated: set LabKernelApp.%s "
                             "instead (%r taken meanwhile)", name, name, getattr(self, name))
        config = Config(config)  # a shallow copy: only the manager's section changes
        config["LabSessionManager"] = Config({k: v for k, v in old.items() if k not in moved})
        return config

    def initialize_handlers(self) -> None:
        self.handlers.extend(pages.page_handlers)
        if not self.server.terminals_enabled:
            # A lab session is a shell: where terminals are off, labs are off too.
            self.log.info("labkernel: terminals are disabled on this server, so lab sessions are too")
            self.handlers.extend(handlers.disabled_handlers)
            return
        self.handlers.extend(handlers.default_handlers)

    def _export_credentials(self) -> None:
        """Let kernels this server starts find it: ``LabClient()`` needs no arguments."""
        os.environ[URL_ENV] = self.server.connection_url
        token = self.server.identity_provider.token
        if token:
            os.environ[TOKEN_ENV] = token
        else:
            # Behind JupyterHub the kernel holds JUPYTERHUB_API_TOKEN already.
            os.environ.pop(TOKEN_ENV, None)

    async def stop_extension(self) -> None:
        """Stop every session and wait until all their processes are gone."""
        await self.manager.shutdown()  # the streams send each session's end meanwhile
        self.streams.hang_up_all()
