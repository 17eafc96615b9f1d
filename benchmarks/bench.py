#!/usr/bin/env python
"""labkernel vs the floor of its stack vs terminado: one Jupyter server, one table.

Run from the repository root:

    python benchmarks/bench.py            # full run (about 10 minutes)
    python benchmarks/bench.py --quick    # smoke run with small counts
    python benchmarks/bench.py --json results.json
    python benchmarks/bench.py --variant main=main --figures echo,flood

It starts ONE real ``jupyter_server`` subprocess with ``labkernel``,
``jupyter_server_terminals`` and three benchmark-only extensions of this directory
enabled (isolated config/runtime/data dirs, random token, ``base_url=/bench/``):
``floor_ext`` (labkernel's routes in ~100 lines: the floor of this stack),
``loop_probe`` (how long each event-loop callback runs) and ``variants_ext`` (other
versions or settings of labkernel, ``--variant``). Every scenario is written once
against a small transport interface (create, attach -> pull/send, destroy) and run
for each transport, alternating the order, repeated:

1. create -> first prompt byte (ms)
2. keystroke echo round trip p50/p99 (ms) typing into ``cat``
3. output throughput (MB/s) of a >= 20 MB command
4. requests an idle attached client makes in 10 s
5. server RSS growth (MB) with 100 attached sessions
6. echo p50/p95 (ms) in one session while another floods with ``yes``, its reader in
   a separate process, and the longest event-loop callback meanwhile; again with
   nobody reading the flood

See benchmarks/README.md for what each figure means exactly.
Progress goes to stderr, the table to stdout.

This file is the command line and the run (warm-up, rounds in palindromic order,
printing); the parts are beside it: ``bench_server`` (the server subprocess, its
HTTP client, ``--variant``), ``bench_transports`` (the reader thread, echo timing,
the transport interface and its two implementations), ``bench_scenarios`` (the
figures and the references) and ``bench_report`` (merging rounds, the table, the
targets, the details).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback

# this folder is on sys.path when run as a script
from bench_report import (
    build_table,
    details,
    evaluate_targets,
    merge,
    reachability,
    render_reference,
    render_table,
    render_targets,
)
from bench_scenarios import SCENARIOS, ref_pty_ceiling, ref_request_floor, s_echo
from bench_server import Server, log, parse_variant, pc
from bench_transports import _quiet, make_transport

FULL = dict(create_n=10, echo_keys=300, echo_warm=20, b2b_keys=300, echo_rounds=2,
            tp_bytes=20_000_000, tp_reps=3, idle_s=10.0, rss_n=100, rss_rounds=2,
            flood_keys=200, flood_warm=20, flood_rounds=3, warm_keys=150,
            warm_requests=1000)
QUICK = dict(create_n=3, echo_keys=60, echo_warm=10, b2b_keys=60, echo_rounds=1,
             tp_bytes=5_000_000, tp_reps=1, idle_s=3.0, rss_n=20, rss_rounds=2,
             flood_keys=60, flood_warm=10, flood_rounds=1, warm_keys=50,
             warm_requests=300)


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def warm_up(transports, srv: Server, P) -> None:
    """Bring the server to a steady state before measuring anything.

    A fresh jupyter_server still runs its first full (generation 2) garbage
    collections during its first thousands of requests, and the first session of
    each kind imports modules (pexpect, ptyprocess...). Those pauses reach ~100 ms
    on a small machine; whichever transport happened to be measured first would
    pay them. Each transport types warm_keys keys into cat, then plain requests.
    """
    for _ in range(P["warm_requests"] // 2):
        srv.http.request("GET", "api/status")
    wp = dict(P, echo_keys=P["warm_keys"], echo_warm=0, key_gap=0.0, b2b_keys=0)
    for T in transports:
        s_echo(T, wp, srv)
    for _ in range(P["warm_requests"] // 2):
        srv.http.request("GET", "api/status")


def probe_transport(T):
    try:
        tid = T.create()
        T.destroy(tid)
    except Exception as e:  # noqa: BLE001
        return f"create failed: {e!r}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, fast smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", metavar="NAMES",
                    help="comma-separated transports to measure (labkernel, floor, "
                         "terminado, variant names); default all")
    ap.add_argument("--figures", metavar="KEYS",
                    help="comma-separated figures to measure: "
                         + ",".join(s[0] for s in SCENARIOS) + " (default all)")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[],
                    metavar="NAME=REF[:Trait=value,...]",
                    help="also measure labkernel from git REF ('.' = the working tree) "
                         "with these LabSessionManager settings, as transport NAME")
    ap.add_argument("--lab-config", metavar="Trait=value,...", default="",
                    help="LabSessionManager settings for the main labkernel")
    ap.add_argument("--rounds", type=int, metavar="N",
                    help="repeat echo and the flood figures N times (default 2 / 3)")
    ap.add_argument("--key-gap-ms", type=float, default=10.0,
                    help="pause between timed keystrokes (default 10 ms)")
    ap.add_argument("--keep-home", action="store_true",
                    help="run the shells with the real HOME (and ~/.bashrc)")
    args = ap.parse_args(argv)
    P = dict(QUICK if args.quick else FULL)
    P["key_gap"] = args.key_gap_ms / 1000.0
    if args.rounds:
        P.update(echo_rounds=args.rounds, flood_rounds=args.rounds)
    figures = set(args.figures.split(",")) if args.figures else {s[0] for s in SCENARIOS}
    lab_config = parse_variant("x=.:" + args.lab_config)["config"]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="labkernel-bench-")
    srv = Server(tmp, clean_home=not args.keep_home, variants=args.variant,
                 lab_config=lab_config)
    specs = [("poll", "labkernel", ""), *[("poll", v["name"], f"v/{v['name']}/")
                                          for v in args.variant],
             ("poll", "floor", "floor/"), ("term", "terminado", "")]
    if args.only:
        only = args.only.split(",")
        specs = [s for s in specs if s[1] in only]
    names = [s[1] for s in specs]
    results = {n: {} for n in names}
    reference: dict = {}
    transports = []
    meta = {"mode": "quick" if args.quick else "full", "params": P,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "variants": args.variant, "lab_config": lab_config}
    rc = 0
    t_start = pc()
    try:
        srv.start()
        meta["server_ready_s"] = srv.wait_ready()
        log(f"server ready in {meta['server_ready_s']:.2f} s")
        for kind, name, prefix in specs:
            T = make_transport((kind, name, srv.port, srv.token, prefix))
            why = probe_transport(T)
            if why:
                log(f"{name} unavailable: {why}")
                results[name]["unavailable"] = why
            else:
                transports.append(T)
        import labkernel
        meta["labkernel_version"] = getattr(labkernel, "__version__", None)
    except BaseException:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    try:
        log("warm-up (server GC, first-session imports) ...")
        t0 = pc()
        warm_up(transports, srv, P)
        log(f"warm-up done in {pc() - t0:.1f} s")
        log("reference: raw PTY ceiling, request floor ...")
        reference["pty_ceiling"] = ref_pty_ceiling(P)
        reference["request_floor"] = ref_request_floor(srv, P)
        for key, title, fn, count_key in SCENARIOS:
            if key not in figures:
                continue
            n = P[count_key] if count_key else 1
            if key == "rss":
                # The first N sessions in a fresh server grow the heap and the
                # object pools to a peak that later rounds reuse, whichever
                # transport runs first: one unmeasured round of each.
                log(f"{title}: one unmeasured round of each transport ...")
                for T in transports:
                    _quiet(fn, T, P, srv)
            log(f"{title}: {n} round(s), transports alternating ...")
            parts: dict = {T.name: [] for T in transports}
            t0 = pc()
            for i in range(n):
                # Palindromic order (A B C, C B A, ...): memory freed and CPU caches
                # warmed by one transport favour the next; over two rounds each
                # transport follows each other once.
                for T in (transports if i % 2 == 0 else transports[::-1]):
                    if parts[T.name] and "error" in parts[T.name][-1]:
                        continue
                    try:
                        res = fn(T, P, srv)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001
                        log(f"{title}: {T.name} FAILED: {e!r}\n{traceback.format_exc()}")
                        res = {"error": repr(e)}
                    parts[T.name].append(res)
                if srv.proc.poll() is not None:
                    raise RuntimeError("jupyter_server died:\n" + srv.log_tail())
            for tname, ps in parts.items():
                errs = [p for p in ps if "error" in p]
                res = errs[0] if errs else merge(ps)
                results[tname][key] = res
                log(f"{title}: {tname}: " + json.dumps(
                    {k: v for k, v in res.items() if isinstance(v, (int, float, str))},
                    default=str)[:300])
            log(f"{title}: {pc() - t0:.1f} s")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        rc = 130
    except Exception:  # noqa: BLE001
        log("benchmark aborted:\n" + traceback.format_exc())
        rc = 1
    finally:
        for T in transports:
            _quiet(T.cleanup)
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["elapsed_s"] = pc() - t_start

    rows = build_table(results, names, P)
    targets = evaluate_targets(rows, names, results)
    print()
    print(f"labkernel, the floor, terminado ({meta['mode']} run, {meta['cpus']} CPUs, "
          f"Python {meta['python']}, {meta['elapsed_s']:.0f} s)")
    for n in names:
        if "unavailable" in results[n]:
            print(f"{n}: not measured: {results[n]['unavailable']}")
    for v in args.variant:
        print(f"variant {v['name']}: labkernel at {v['ref']}"
              + (f" ({v['commit']})" if v.get("commit") else "")
              + (f" with {v['config']}" if v["config"] else ""))
    print(render_table(rows, names))
    print()
    print("targets (same run; ratios: median of per-round ratios, with their range):")
    print(render_targets(targets))
    print(reachability(rows, reference))
    print()
    if args.quick:
        print(f"(--quick: idle window {P['idle_s']:g} s, {P['rss_n']} sessions for RSS, "
              f"{P['echo_keys']} echo keys, {P['tp_bytes'] / 1e6:g} MB throughput, "
              f"{P['flood_rounds']} flood round(s))")
    print(details(results, names))
    print(render_reference(reference, P))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": rows, "targets": targets, "results": results,
                       "reference": reference}, f, indent=1, default=str)
        log(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
