"""The results: rounds merged, the table, the targets, the details, the references.

Pure functions of the results dict that ``bench.py`` collects; what they print is
what the benchmark prints, and what they return goes into the JSON.
"""
from __future__ import annotations

import math
import statistics


# ----------------------------------------------------------------------------------
# Merging rounds, the table and the targets
# ----------------------------------------------------------------------------------
def merge(parts):
    """Median of each numeric figure over the rounds, with its range."""
    out = {"rounds": len(parts)}
    for k, v in parts[0].items():
        vals = [p[k] for p in parts if isinstance(p.get(k), (int, float))]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and vals:
            out[k] = statistics.median(vals)
            if len(vals) > 1:
                out[k + "_range"] = [min(vals), max(vals)]
        elif k not in out:
            out[k] = v
    out["by_round"] = parts
    return out


# (row id, label, result key, field, lower is better)
ROWS = [
    ("create_first_byte_ms", "create -> first prompt byte (ms, median)", "create",
     "first_byte_ms"),
    ("echo_p50_ms", "echo round trip p50 (ms)", "echo", "p50"),
    ("echo_p99_ms", "echo round trip p99 (ms)", "echo", "p99"),
    ("throughput_MBps", "output throughput (MB/s, median)", "throughput", "MBps"),
    ("idle_requests", "idle client: requests (HTTP) / WS msgs in {idle}", "idle", "count"),
    ("rss_growth_MB", "server RSS growth, {rss_n} sessions (MB)", "rss", "growth_MB"),
    ("flood_echo_p50_ms", "echo p50 while another session floods (ms)", "flood", "p50"),
    ("flood_echo_p95_ms", "echo p95 while another session floods (ms)", "flood", "p95"),
    ("flood_loop_max_ms", "  longest loop callback meanwhile (ms, wall)", "flood", "loop_max_ms"),
    ("flood_loop_max_cpu_ms", "  longest loop callback meanwhile (ms, CPU)", "flood",
     "loop_max_cpu_ms"),
    ("flood_MBps", "  flood consumed meanwhile (MB/s)", "flood", "flood_MBps"),
    ("flood_noreader_echo_p95_ms", "echo p95, flood with no reader attached (ms)",
     "flood_noreader", "p95"),
    ("flood_noreader_loop_max_ms", "  longest loop callback meanwhile (ms, wall)",
     "flood_noreader", "loop_max_ms"),
]

# (label, row id, reference transport or None for an absolute bound, factor, higher is better)
TARGETS = [
    ("create -> first byte <= terminado's", "create_first_byte_ms", "terminado", 1.0, False),
    ("echo p50 <= 1.15x the floor's", "echo_p50_ms", "floor", 1.15, False),
    ("throughput >= 4x terminado's", "throughput_MBps", "terminado", 4.0, True),
    ("idle client <= 1 request in the window", "idle_requests", None, 1, False),
    ("RSS growth <= terminado's", "rss_growth_MB", "terminado", 1.0, False),
    ("echo p95 under flood <= 1.5x the floor's", "flood_echo_p95_ms", "floor", 1.5, False),
    ("echo p95 under flood <= 2.5x terminado's", "flood_echo_p95_ms", "terminado", 2.5, False),
    ("no loop callback over 5 ms during the flood", "flood_loop_max_ms", None, 5.0, False),
    ("  same, judged on CPU time", "flood_loop_max_cpu_ms", None, 5.0, False),
]


def _num(res, key, field):
    r = res.get(key)
    if not isinstance(r, dict) or "error" in r:
        return None
    v = r.get(field)
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _grid(head, body, left=1):
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def build_table(results, names, P):
    rows = []
    for rid, label, key, field in ROWS:
        label = label.format(idle=f"{P['idle_s']:g} s", rss_n=P["rss_n"])
        vals = {n: _num(results[n], key, field) for n in names}
        rows.append({"id": rid, "metric": label, "values": vals})
    return rows


def render_table(rows, names) -> str:
    ratio_cols = [n for n in ("floor", "terminado") if n in names and "labkernel" in names]
    head = ["metric"] + names + [f"L/{'F' if n == 'floor' else 'T'}" for n in ratio_cols]
    body = []
    for r in rows:
        v = r["values"]
        cells = [r["metric"]] + [fmt(v[n]) for n in names]
        for n in ratio_cols:
            a, b = v.get("labkernel"), v.get(n)
            cells.append(fmt(a / b) + "x" if a is not None and b else "-")
        body.append(cells)
    return _grid(head, body)


def paired_ratios(results, a, b, key, field):
    """a/b round by round: each round ran a and b back to back, so the ratio cancels
    most of what the rest of the machine did meanwhile."""
    ra, rb = results[a].get(key), results[b].get(key)
    if not (isinstance(ra, dict) and isinstance(rb, dict)):
        return []
    out = []
    for x, y in zip(ra.get("by_round", []), rb.get("by_round", [])):
        u, v = x.get(field), y.get(field)
        if isinstance(u, (int, float)) and isinstance(v, (int, float)) and v:
            out.append(u / v)
    return out


def evaluate_targets(rows, names, results):
    """For labkernel and each variant: each target's figure, same-run ratio, met.

    The ratio is the median of the per-round ratios where the figure has rounds
    (paired), else the ratio of the medians.
    """
    by_id = {r["id"]: r["values"] for r in rows}
    where = {rid: (key, field) for rid, _, key, field in ROWS}
    out = {}
    for n in names:
        if n in ("floor", "terminado"):
            continue
        res = []
        for label, rid, ref, factor, higher in TARGETS:
            v = by_id.get(rid, {}).get(n)
            entry = {"target": label, "value": v, "ratio": None, "met": None}
            if v is not None and ref is None:
                entry["met"] = v >= factor if higher else v <= factor
            elif v is not None and by_id[rid].get(ref):
                entry["ratio"] = entry["ratio_of_medians"] = v / by_id[rid][ref]
                pr = paired_ratios(results, n, ref, *where[rid])
                if len(pr) > 1:
                    entry.update(ratio=statistics.median(pr), ratio_range=[min(pr), max(pr)])
                r = entry["ratio"]
                entry["met"] = r >= factor if higher else r <= factor
            res.append(entry)
        out[n] = res
    return out


def render_targets(targets) -> str:
    names = list(targets)
    if not names:
        return ""
    head = ["target"] + [h for n in names for h in (n, "ratio", "met")]
    body = []
    for i, t in enumerate(targets[names[0]]):
        cells = [t["target"]]
        for n in names:
            x = targets[n][i]
            ratio = "-" if x["ratio"] is None else fmt(x["ratio"]) + "x"
            if "ratio_range" in x:
                ratio += " ({}-{})".format(*map(fmt, x["ratio_range"]))
            cells += [fmt(x["value"]), ratio,
                      "n/a" if x["met"] is None else ("met" if x["met"] else "NOT met")]
        body.append(cells)
    return _grid(head, body)


def details(results, names) -> str:
    """Secondary figures and the spread over rounds."""
    out = []
    for n in names:
        res, parts = results[n], []

        def rng(key, field, unit="ms"):
            r = res.get(key, {})
            if isinstance(r, dict) and field + "_range" in r:
                lo, hi = r[field + "_range"]
                return f"{fmt(r[field])} ({fmt(lo)}-{fmt(hi)} over {r['rounds']} rounds) {unit}"
            return f"{fmt(r.get(field) if isinstance(r, dict) else None)} {unit}"

        c = res.get("create", {})
        if "create_request_ms" in c:
            parts.append(f"create request {fmt(c['create_request_ms'])} ms, attached at "
                         f"{fmt(c['attached_ms'])} ms")
        e = res.get("echo", {})
        if "p50" in e:
            parts.append(f"echo p50 {rng('echo', 'p50')}, p99 {rng('echo', 'p99')}, max "
                         f"{fmt(e['max'])} ms, server CPU {fmt(e['server_cpu_ms_per_key'])} "
                         f"ms/key; keys back to back: p50 {fmt(e.get('b2b_p50'))} / p99 "
                         f"{fmt(e.get('b2b_p99'))} ms")
        tp = res.get("throughput", {})
        if "MBps" in tp:
            parts.append(f"throughput {rng('throughput', 'MBps', 'MB/s')}: "
                         f"{fmt(tp['avg_answer_KiB'])} KiB/answer, server CPU "
                         f"{fmt(tp['server_cpu_ms_per_MB'])} ms/MB, longest loop callback "
                         f"{fmt(tp['loop_max_ms'])} ms")
        idle = res.get("idle", {})
        if "count" in idle:
            parts.append(f"idle: {idle['count']} ({idle.get('requests') or idle.get('by_opcode')})")
        rs = res.get("rss", {})
        if "growth_MB" in rs:
            parts.append(f"RSS {fmt(rs['rss_before_MB'])} -> {fmt(rs['rss_with_sessions_MB'])} -> "
                         f"{fmt(rs['rss_after_cleanup_MB'])} MB after cleanup; growth by round "
                         + ", ".join(fmt(p["growth_MB"]) for p in rs["by_round"]) + " MB")
        for key, what in (("flood", "flood, reader attached"),
                          ("flood_noreader", "flood, nobody reading")):
            f = res.get(key, {})
            if "p50" in f:
                s = (f"{what}: echo p50 {rng(key, 'p50')}, p95 {rng(key, 'p95')}, longest loop "
                     f"callback {rng(key, 'loop_max_ms')} wall / {rng(key, 'loop_max_cpu_ms')} "
                     f"CPU, callbacks over 5 ms {fmt(f['loop_over_5ms'])} (CPU: "
                     f"{fmt(f['loop_over_5ms_cpu'])}), loop busy {fmt(100 * f['loop_busy'])} % "
                     f"(CPU {fmt(100 * f['loop_busy_cpu'])} %)")
                if "flood_MBps" in f:
                    s += f", flood consumed at {rng(key, 'flood_MBps', 'MB/s')}"
                if "ingest_MBps" in f:
                    s += f", server took {fmt(f['ingest_MBps'])} MB/s from the PTY"
                if "gc_max_ms" in f:
                    s += (f"; longest CPU without garbage collection {rng(key, 'loop_max_cpu_nogc_ms')}, "
                          f"longest collection {rng(key, 'gc_max_ms')} "
                          f"({fmt(f['gc_full_collections'])} full)")
                if f.get("loop_top"):
                    t = f["loop_top"][0]
                    s += f"; longest was {t['what']}"
                parts.append(s)
        for k, v in res.items():
            if isinstance(v, dict) and "error" in v:
                parts.append(f"{k}: ERROR {v['error']}")
        if parts:
            out.append(f"{n}:\n  - " + "\n  - ".join(parts))
    return "\n".join(out)


def reachability(rows, ref) -> str:
    """Whether the throughput target is reachable at all on this machine, this run:
    no terminal transport can carry output faster than the PTY gives it."""
    ceiling = (ref.get("pty_ceiling") or {}).get("MBps")
    term = next((r["values"].get("terminado") for r in rows if r["id"] == "throughput_MBps"), None)
    factor = next(f for label, rid, _, f, _ in TARGETS if rid == "throughput_MBps")
    if not ceiling or not term:
        return ""
    need = factor * term
    verdict = "above" if need > ceiling else "below"
    return (f"(throughput target: {factor:g}x terminado's is {fmt(need)} MB/s, {verdict} the raw "
            f"PTY ceiling of this run, {fmt(ceiling)} MB/s)")


def render_reference(ref, P) -> str:
    out = ["reference (no transport):"]
    pc_ = ref.get("pty_ceiling")
    if pc_:
        out.append(f"  - raw PTY ceiling: the throughput command read straight from a PTY by "
                   f"this process: {fmt(pc_['MBps'])} MB/s")
    rf = ref.get("request_floor")
    if rf:
        out.append(f"  - jupyter_server request floor: authenticated GET /api/status round trip, "
                   f"spaced {P['key_gap'] * 1000:g} ms apart: p50 {fmt(rf['p50'])} / "
                   f"p99 {fmt(rf['p99'])} ms")
    return "\n".join(out) if len(out) > 1 else ""
