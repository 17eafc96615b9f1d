"""More labkernels in the same server, for comparing versions and settings (benchmark only).

``bench.py --variant NAME=REF[:Trait=value,...]`` puts a copy of labkernel's package
from git ``REF`` on the server's path as ``labkernel_<NAME>`` (the package uses
relative imports only) and lists it in ``LABKERNEL_BENCH_VARIANTS``. This extension
gives each variant its own ``LabSessionManager`` (the server's config plus the
variant's traitlet overrides) and mounts that package's own handlers, bound to that
manager, under ``<base>/v/<NAME>/``: ``LabClient(<base>/v/<NAME>/)`` then drives it
as it drives labkernel, so variants alternate within one run and one server.
"""
from __future__ import annotations

import importlib
import json
import os

from jupyter_server.utils import url_path_join

#: LabKernelApp's settings a variant may override for its own routes.
HTTP_LIMITS = ("max_wait", "batch_delay", "max_answer_size", "max_body_size")


class _AppWithLimits:
    """The server's labkernel app as a variant's handlers see it: its own limits first."""

    def __init__(self, app, limits):
        self._app, self._limits = app, limits

    def __getattr__(self, name):
        return self._limits[name] if name in self._limits else getattr(self._app, name)


def _jupyter_server_extension_points():
    return [{"module": "variants_ext"}]


def _load_jupyter_server_extension(serverapp) -> None:
    managers = []
    for v in json.loads(os.environ.get("LABKERNEL_BENCH_VARIANTS", "[]")):
        try:  # the package's layout since the restructuring, else the flat one before
            handlers = importlib.import_module(f"{v['package']}.server.handlers")
        except ModuleNotFoundError:
            handlers = importlib.import_module(f"{v['package']}.handlers")
        manager_mod = importlib.import_module(f"{v['package']}.manager")
        # The HTTP limits (max_wait, batch_delay, max_answer_size) are the app's since
        # the restructuring: a variant's own go to its handlers' app below, the rest to
        # its manager. A variant of the flat layout still has them on its manager.
        app_limits = {}
        if hasattr(importlib.import_module(v["package"]), "server"):
            app_limits = {k: v["config"][k] for k in HTTP_LIMITS if k in v["config"]}
        manager_config = {k: val for k, val in v["config"].items() if k not in app_limits}
        manager = manager_mod.LabSessionManager(
            parent=serverapp, root_dir=serverapp.root_dir, log=serverapp.log, **manager_config)
        managers.append(manager)
        base = url_path_join(serverapp.base_url, "v", v["name"])
        specs = []
        for pattern, cls in handlers.default_handlers:
            members = {"manager": property(lambda self, m=manager: m)}
            if app_limits:
                members["extensionapp"] = property(
                    lambda self, limits=app_limits: _AppWithLimits(self.settings["labkernel"], limits))
            bound = type(cls.__name__, (cls,), members)
            specs.append((url_path_join(base, pattern), bound, {"name": "labkernel"}))
        serverapp.web_app.add_handlers(".*$", specs)
        serverapp.log.info("bench variant %s (%s, %s) at %s", v["name"], v["package"],
                           v["config"], base)
    serverapp.web_app.settings["bench_variant_managers"] = managers
