"""How long each event-loop callback runs in the server (benchmark only).

Loaded by ``bench.py`` as a server extension. It wraps ``asyncio.events.Handle._run``
(what asyncio's debug mode times for its slow-callback log, without the rest of
debug mode's cost), and ``GET <base>/probe/loop?action=start|stop`` starts a window
and returns, for the window, the longest callbacks by wall time and by the server
thread's CPU time, and how many ran over 5 ms. Only time inside callbacks counts
(the wait in ``epoll_wait`` and asyncio's own bookkeeping do not). Wall time
includes the server being preempted by other processes (2 CPUs shared with the
shells and the clients); CPU time does not.

Python's cyclic garbage collector runs inside whichever callback happens to
allocate when a generation fills up, so the window also reports the collections
(``gc.callbacks``): their count per generation and the longest pause, and each
callback's CPU time without the collections that ran inside it.
"""
from __future__ import annotations

import asyncio.events
import gc
import json
import time

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

_orig_run = asyncio.events.Handle._run
_state: dict = {"on": False}
pc, tt = time.perf_counter, time.thread_time


def _reset() -> None:
    _state.update(n=0, busy=0.0, busy_cpu=0.0, over5=0, over5_cpu=0, top=[], t0=pc(), max_cpu=0.0,
                  max_cpu_what="", max_cpu_nogc=0.0, gc_counts=[0, 0, 0], gc_max=0.0,
                  gc_max_cpu=0.0, gc_max_gen=-1)


_gc = {"cpu": 0.0, "start": None}  # CPU time spent collecting, in total


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc["start"] = (pc(), tt())
        return
    if _gc["start"] is None:
        return
    (w0, c0), _gc["start"] = _gc["start"], None
    wall, cpu = pc() - w0, tt() - c0
    _gc["cpu"] += cpu
    s = _state
    if s["on"]:
        s["gc_counts"][info["generation"]] += 1
        if wall > s["gc_max"]:
            s["gc_max"], s["gc_max_cpu"], s["gc_max_gen"] = wall, cpu, info["generation"]


gc.callbacks.append(_on_gc)


def _what(handle) -> str:
    cb = getattr(handle, "_callback", None)
    return f"{getattr(cb, '__qualname__', None) or repr(cb)}{handle._args!r}"[:160]


def _run(self):
    if not _state["on"]:
        return _orig_run(self)
    w0, c0, g0 = pc(), tt(), _gc["cpu"]
    try:
        return _orig_run(self)
    finally:
        wall, cpu = pc() - w0, tt() - c0
        s = _state
        s["max_cpu_nogc"] = max(s["max_cpu_nogc"], cpu - (_gc["cpu"] - g0))
        s["n"] += 1
        s["busy"] += wall
        s["busy_cpu"] += cpu
        if wall > 0.005:
            s["over5"] += 1
        if cpu > 0.005:
            s["over5_cpu"] += 1
        if cpu > s["max_cpu"]:
            s["max_cpu"], s["max_cpu_what"] = cpu, _what(self)
        top = s["top"]
        if len(top) < 5 or wall > top[-1][0]:
            top.append((wall, cpu, _what(self)))
            top.sort(key=lambda x: -x[0])
            del top[5:]


asyncio.events.Handle._run = _run


class LoopProbe(APIHandler):
    @web.authenticated
    def get(self) -> None:
        action = self.get_argument("action", "stop")
        out = {}
        if _state["on"] and "t0" in _state:
            s = _state
            top = s["top"]
            out = {"window_s": pc() - s["t0"], "callbacks": s["n"],
                   "busy_fraction": s["busy"] / max(pc() - s["t0"], 1e-9),
                   "busy_cpu_fraction": s["busy_cpu"] / max(pc() - s["t0"], 1e-9),
                   "max_ms": top[0][0] * 1e3 if top else 0.0,
                   "max_cpu_ms": s["max_cpu"] * 1e3, "max_cpu_what": s["max_cpu_what"],
                   "over_5ms": s["over5"], "over_5ms_cpu": s["over5_cpu"],
                   "max_cpu_nogc_ms": s["max_cpu_nogc"] * 1e3,
                   "gc_collections": s["gc_counts"], "gc_max_ms": s["gc_max"] * 1e3,
                   "gc_max_cpu_ms": s["gc_max_cpu"] * 1e3, "gc_max_generation": s["gc_max_gen"],
                   "top": [{"ms": w * 1e3, "cpu_ms": c * 1e3, "what": x} for w, c, x in top]}
        _state["on"] = action == "start"
        if _state["on"]:
            _reset()
        self.finish(json.dumps(out))


def _jupyter_server_extension_points():
    return [{"module": "loop_probe"}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(serverapp.base_url, "probe/loop"), LoopProbe)])
