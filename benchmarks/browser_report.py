"""The browser benchmark's table: every figure, labkernel against JupyterLab's terminal of
the same page and run, and the targets of issue 13 marked met or not."""

from __future__ import annotations

import statistics
from typing import Any, Callable, Optional

Row = tuple[str, Optional[float], Optional[float], str, Optional[bool], str]


def pct(values: list[float], p: float) -> Optional[float]:
    """The ``p``-th percentile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def values(samples: list[dict[str, Any]], key: str) -> list[float]:
    return [s[key] for s in samples if s.get(key) is not None]


def median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def fmt(v: Optional[float], digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def verdict(ok: Optional[bool]) -> str:
    return "" if ok is None else ("**met**" if ok else "not met")


def at_most(v: Optional[float], limit: float) -> Optional[bool]:
    return None if v is None else v <= limit


def _pick(targets: list[dict[str, Any]], kind: str, predict: Any = "any") -> Optional[dict[str, Any]]:
    for t in targets:
        if t["kind"] == kind and (predict == "any" or t["predict"] == predict):
            return t
    return None


def variants(targets: list[dict[str, Any]]) -> tuple[str, str, str, str]:
    """Names of the labkernel terminal with prediction on, the one with it off, and JupyterLab's;
    and a note where the widget has no prediction option (both are then the default one)."""
    on = _pick(targets, "lk", True)
    off = _pick(targets, "lk", False)
    jl = _pick(targets, "jl")
    assert jl is not None
    if on and off:
        return on["name"], off["name"], jl["name"], ""
    default = _pick(targets, "lk")
    assert default is not None
    return default["name"], default["name"], jl["name"], " (no `predict` option: the default Terminal)"


def typing_rows(fig: dict[str, Any]) -> list[Row]:
    on, off, jl, note = variants(fig["targets"])
    s = fig["samples"]
    rows: list[Row] = []
    for p in (50, 90):
        a, b = pct(values(s[on], "paint"), p), pct(values(s[jl], "paint"), p)
        r = ratio(a, b)
        rows.append((f"keydown → paint p{p}, prediction on{note}", a, b, fmt(r, 2), at_most(r, 0.8), "≤ 0.8×"))
    for p in (50, 90):
        a, b = pct(values(s[off], "paint"), p), pct(values(s[jl], "paint"), p)
        rows.append((f"keydown → paint p{p}, prediction off", a, b, fmt(ratio(a, b), 2), None, ""))
    for p in (50, 90):
        a, b = pct(values(s[off], "echo"), p), pct(values(s[jl], "echo"), p)
        r = ratio(a, b)
        rows.append((f"keydown → echo (arrival) p{p}, prediction off", a, b, fmt(r, 2),
                     at_most(r, 2.0) if p == 50 else None, "≤ 2×" if p == 50 else ""))
    early = [x for x in s[on] if x.get("drawn") is not None and x.get("echo") is not None
             and x["drawn"] < x["echo"]]
    rows.append((f"keys drawn before their echo arrived (predicted), prediction on, of {len(s[on])}",
                 float(len(early)), None, "", None, ""))
    return rows


def delay_rows(fig: dict[str, Any]) -> list[Row]:
    on, off, jl, note = variants(fig["targets"])
    rows: list[Row] = []
    for d, s in fig["samples"].items():
        ms = f"{float(d):g}"
        a, b = pct(values(s[on], "paint"), 50), pct(values(s[jl], "paint"), 50)
        target = float(d) == 150
        rows.append((f"+{ms} ms each way: keydown → paint p50, prediction on{note}", a, b, fmt(ratio(a, b), 2),
                     at_most(a, 25.0) if target else None, "≤ 25 ms" if target else ""))
        a, b = pct(values(s[off], "echo"), 50), pct(values(s[jl], "echo"), 50)
        rows.append((f"+{ms} ms each way: keydown → echo p50, prediction off", a, b, fmt(ratio(a, b), 2),
                     None, ""))
    return rows


def four_rows(fig: dict[str, Any]) -> list[Row]:
    terms = fig["terminals"]
    lone_lk = _pick(terms["lone"], "lk")
    lone_jl = _pick(terms["lone"], "jl")
    four_jl = _pick(terms["four"], "jl")
    assert lone_lk and lone_jl and four_jl
    s = fig["samples"]
    lone = pct(values(s["lone"][lone_lk["name"]], "echo"), 50)
    jl_lone = pct(values(s["lone"][lone_jl["name"]], "echo"), 50)
    jl_four = pct(values(s["four"][four_jl["name"]], "echo"), 50)
    rows: list[Row] = [("one terminal on the page: echo p50", lone, jl_lone, fmt(ratio(lone, jl_lone), 2), None, "")]
    for t in terms["four"]:
        if t["kind"] != "lk":
            continue
        v = pct(values(s["four"][t["name"]], "echo"), 50)
        r = ratio(v, lone)
        rows.append((f"four terminals: echo p50, {t['name']} ({fmt(r, 2)}× the lone one)", v, jl_four,
                     fmt(ratio(v, jl_four), 2), at_most(r, 1.2), "≤ 1.2× lone"))
    reqs = fig["requests"]["four"]
    wait0 = sum(c["wait0_polls"] for c in reqs.values())
    rows.append(("four terminals: `wait=0` polls while typing", float(wait0), None, "", wait0 == 0, "none"))
    return rows


def idle_rows(fig: dict[str, Any]) -> list[Row]:
    w = fig["windows"]

    def med(key: str, field: str) -> Optional[float]:
        return median([x[field] for x in w[key]])

    rows: list[Row] = []
    a, b = med("labkernel", "cpu_pct"), med("jupyterlab", "cpu_pct")
    r = ratio(a, b)
    rows.append(("idle page, its terminal focused: Chromium CPU, % of a core (median)", a, b, fmt(r, 2),
                 at_most(r, 1.0), "≤ 1×"))
    a, b = med("labkernel", "task_ms_per_s"), med("jupyterlab", "task_ms_per_s")
    rows.append(("idle page, its terminal focused: main thread, ms/s", a, b, fmt(ratio(a, b), 2), None, ""))
    rows.append(("idle page, no terminal focused: Chromium CPU, % of a core", med("none", "cpu_pct"), None,
                 "", None, ""))
    for page, n in fig["terminals"].items():
        r = fig["requests"][page]
        rows.append((f"no output: labkernel requests, most in any 25 s, page with {n} terminal"
                     f"{'s' if n > 1 else ''} ({r['count']} in {r['seconds']:.0f} s: {r['per_25s']:.1f} per 25 s)",
                     float(r["most_in_25s"]), None, "", at_most(r["most_in_25s"], 1), "≤ 1"))
    return rows


def flood_rows(fig: dict[str, Any], size: str) -> list[Row]:
    lk, jl = fig["lk"], fig["jl"]

    def med(rounds: list[dict[str, Any]], key: str) -> Optional[float]:
        return median([r[key] for r in rounds if r.get(key) is not None])

    def probes(rounds: list[dict[str, Any]], key: str) -> list[float]:
        return [p["echo"] for r in rounds for p in r[key] if p.get("echo") is not None]

    rows: list[Row] = []
    a, b = med(lk, "shown_ms"), med(jl, "shown_ms")
    r = ratio(a, b)
    rows.append((f"flood of {size}: all shown (ms, median)", a, b, fmt(r, 2), at_most(r, 1.0), "≤ 1×"))
    a, b = med(lk, "arrived_ms"), med(jl, "arrived_ms")
    rows.append((f"flood of {size}: all arrived (ms)", a, b, fmt(ratio(a, b), 2), None, ""))
    a = max((r["longest_task_ms"] for r in lk), default=None)
    b = max((r["longest_task_ms"] for r in jl), default=None)
    rows.append(("flood: longest main-thread task (ms; < 50: none)", a, b, fmt(ratio(a, b), 2) if a and b else "",
                 at_most(a, 100.0), "≤ 100"))
    idle_lk, idle_jl = pct(probes(lk, "idle_probes"), 50), pct(probes(jl, "idle_probes"), 50)
    rows.append(("second terminal: echo p50, idle", idle_lk, idle_jl, fmt(ratio(idle_lk, idle_jl), 2), None, ""))
    fl_lk, fl_jl = pct(probes(lk, "probes"), 50), pct(probes(jl, "probes"), 50)
    r_lk, r_jl = ratio(fl_lk, idle_lk), ratio(fl_jl, idle_jl)
    rows.append((f"second terminal: echo p50 during the flood ({fmt(r_lk, 2)}× idle; JupyterLab "
                 f"{fmt(r_jl, 2)}×)", fl_lk, fl_jl, fmt(ratio(fl_lk, fl_jl), 2), at_most(r_lk, 2.0), "≤ 2× idle"))
    return rows


def table(results: dict[str, Any]) -> str:
    figs = results["figures"]
    env = results["env"]
    sections: list[tuple[str, Callable[[], list[Row]]]] = []
    if "typing" in figs:
        sections.append(("typing", lambda: typing_rows(figs["typing"])))
    if "delay" in figs:
        sections.append(("delay", lambda: delay_rows(figs["delay"])))
    if "four" in figs:
        sections.append(("four", lambda: four_rows(figs["four"])))
    if "idle" in figs:
        sections.append(("idle", lambda: idle_rows(figs["idle"])))
    if "flood" in figs:
        sections.append(("flood", lambda: flood_rows(figs["flood"], results["params"]["flood"])))
    out = [f"labkernel {env.get('branch')}@{env.get('commit')}{' (dirty)' if env.get('dirty') else ''}, "
           f"Chromium {env.get('chromium')}, `predict` option: {'yes' if results.get('predict') else 'no'}, "
           f"rounds {results['params']['rounds']}, {env.get('time')}; ms unless said",
           "",
           "| figure | labkernel | JupyterLab terminal | labkernel / JupyterLab | target | met |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    for _name, rows in sections:
        for label, a, b, r, ok, target in rows():
            cells = [fmt(a), fmt(b) if b is not None else ""]
            if "longest" in label:  # a long task is one of 50 ms or more: none shows as 0
                cells = ["< 50" if v == "0.0" else v for v in cells]
            out.append(f"| {label} | {cells[0]} | {cells[1]} | {r} | {target} | {verdict(ok)} |")
    if "typing" in figs:
        out += ["", "Where a key's time goes (typing, medians, ms from keydown): the echo's arrival, xterm "
                "drawing it, the end of that frame's rendering steps, the next frame (= paint):", "",
                "| terminal | keys | echo | drawn | frame end | paint |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, samples in figs["typing"]["samples"].items():
            meds = [fmt(median(values(samples, k))) for k in ("echo", "drawn", "frame_end", "paint")]
            out.append(f"| {name} | {len(samples)} | " + " | ".join(meds) + " |")
    if "four" in figs:
        out += ["", "Requests to labkernel's API while typing (four-terminal figure):", "",
                "| page | terminal | keys | requests | input POSTs | output polls | `wait=0` polls |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        four = figs["four"]
        for page, per in four["requests"].items():
            for who, c in sorted(per.items()):
                keys = len(four["samples"][page].get(who, []))
                out.append(f"| {page} | {who} | {keys} | {c['requests']} | {c['input_posts']} "
                           f"| {c['output_polls']} | {c['wait0_polls']} |")
    counts = []
    if "typing" in figs:
        counts.append("typing " + "/".join(str(len(v)) for v in figs["typing"]["samples"].values()) + " keys")
    if "flood" in figs:
        counts.append(f"floods {len(figs['flood']['lk'])}+{len(figs['flood']['jl'])}")
    timeouts = sum(1 for f in ("typing",) if f in figs for v in figs[f]["samples"].values() for x in v
                   if x.get("timed_out"))
    out += ["", f"samples: {', '.join(counts) or 'see the JSON'}; timed-out keys: {timeouts}; "
            f"run took {results.get('seconds', 0):.0f} s"]
    return "\n".join(out)
