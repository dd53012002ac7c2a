"""The `glrast` command. One argparse subcommand per task; each is a function
`_cmd_<name>(args) -> int` registered in `build_parser()`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ._version import __version__


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor, format_report

    report = doctor()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if any(p["severity"] == "error" for p in report["problems"]) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glrast", description="glrast: differentiable rasterization")
    parser.add_argument("--version", action="version", version=f"glrast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    doctor = commands.add_parser(
        "doctor",
        help="check GL/EGL, CUDA, NVRTC and the host compiler, and say how to fix what fails",
        description="Print what glrast finds on this machine (GL vendor/renderer/version, EGL devices and their "
        "CUDA ordinals, CUDA driver, NVRTC, host compiler, cache) and a fix for each problem. "
        "Exit status 1 when an error keeps glrast from working.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(run=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glrast` command (and `python -m glrast`); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)
