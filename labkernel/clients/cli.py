"""The ``labkernel`` command line: ``labkernel test PATH…`` tests labs the way a learner works.

Exit status: 0 when no lab failed (labs that verified nothing, and labs skipped for
what they need, do not fail it unless ``--strict``: see ``labtest``), 1 when any
failed, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .client import LabClient, LabError
from .labtest import NEED_PROBES, LabResult, LocalServer, ServerFailed, format_report, junit_xml, run_tests


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="labkernel", description="Hands-on shell labs inside Jupyter.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    test = commands.add_parser(
        "test", help="run each lab's steps as a learner would and check its checks",
        description="For each lab: start it, and for each step confirm that its check fails before "
                    "the solution, run the solution's commands in the terminal one by one (each once the "
                    "prompt is back, its exit status read), and wait for the check to pass. A step is "
                    "verified (its check passed), unverified (no check; its solution exited 0) or failed; "
                    "a lab passes only with a verified step and none failed. Without --url, a Jupyter "
                    "server with labkernel is started for the labs in PATH.")
    test.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="a lab folder (lab.toml or index.json) or a folder of labs, searched recursively")
    test.add_argument("--url", help="test the labs of this running Jupyter server (with its base URL) "
                                    "instead of starting one; PATHs are not allowed then")
    test.add_argument("--token", help="the running server's token (default: from --url's ?token=, "
                                      "or $LABKERNEL_TOKEN)")
    test.add_argument("--lab", action="append", default=[], metavar="ID",
                      help="test only this lab (repeatable); default: every lab but the built-in shell")
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write the results as JUnit XML")
    test.add_argument("--strict", action="store_true",
                      help="fail on unverified steps (no check) and skipped ones (a check but no solution)")
    test.add_argument("--have", action="append", default=[], metavar="NEED",
                      help="take NEED as met without looking (repeatable): one of "
                           f"{', '.join(NEED_PROBES)}, or another a lab names; by default each is looked "
                           "for in a lab shell of the server")
    test.add_argument("--timeout", type=float, default=60.0, metavar="S",
                      help="seconds a step's check may take to pass after its solution (default: 60)")
    test.add_argument("--command-timeout", type=float, default=120.0, metavar="S",
                      help="seconds each solution command may run before Ctrl-C ends it and fails "
                           "the step (default: 120)")
    test.add_argument("--start-timeout", type=float, default=120.0, metavar="S",
                      help="seconds a lab's setup may take (default: 120)")
    test.add_argument("--root", type=Path, metavar="DIR",
                      help="the started server's root folder (default: a fresh temporary folder)")
    return parser, test


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """The console script's entry point; returns the exit status."""
    out = out or sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # ✓ and ✗ on a terminal that cannot show them
    parser, test = _parser()
    args = parser.parse_args(argv)
    parser = test  # usage errors below are the test command's
    if args.url and args.paths:
        parser.error("give PATHs (a server is started for them) or --url (the labs of that server), not both")
    if not args.url and not args.paths:
        parser.error("give at least one PATH of labs to test, or --url of a running server")
    for path in args.paths:
        if not path.is_dir():
            parser.error(f"{path} is not a folder")
    if args.junit and not args.junit.parent.is_dir():
        parser.error(f"--junit {args.junit}: its folder does not exist")
    if args.root and not args.root.is_dir():
        parser.error(f"--root {args.root} is not a folder")
    return _test(args, out)


def _test(args: argparse.Namespace, out: TextIO) -> int:
    def go(url: str, token: Optional[str]) -> list[LabResult]:
        with LabClient(url, token=token, timeout=60) as client:
            return run_tests(client, args.lab, out=out, step_timeout=args.timeout,
                             start_timeout=args.start_timeout, command_timeout=args.command_timeout,
                             have=args.have)

    try:
        if args.url:
            print(f"labkernel test: the labs of {args.url.split('?')[0]}", file=out, flush=True)
            results = go(args.url, args.token)
        else:
            print(f"labkernel test: {', '.join(map(str, args.paths))} (starting a Jupyter server…)",
                  file=out, flush=True)
            with LocalServer(args.paths, root_dir=args.root) as server:
                results = go(server.url, server.token)
                if not results:
                    print(f"no labs found in {', '.join(map(str, args.paths))}; the server's log:\n"
                          f"{server.log()}", file=out)
    except ServerFailed as e:
        print(f"✗ {e}", file=out)
        return 1
    except LabError as e:
        print(f"✗ cannot test the labs: {e}", file=out)
        return 1
    except KeyboardInterrupt:  # the server we started, and its sessions, are stopped by now
        print("\ninterrupted", file=out)
        return 130
    if not results:
        return 1
    print("", file=out)
    print(format_report(results, args.strict), file=out, flush=True)
    if args.junit:
        args.junit.write_text(junit_xml(results, args.strict), encoding="utf-8")
        print(f"JUnit XML: {args.junit}", file=out)
    return 1 if any(r.failed(args.strict) for r in results) else 0


if __name__ == "__main__":  # python -m labkernel.clients.cli
    sys.exit(main())
