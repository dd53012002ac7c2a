"""The `glrast` command. One argparse subcommand per task; each is a function
`_cmd_<name>(args) -> int` registered in `build_parser()`.

Every failure is one line on stderr, `glrast: error: ...`, with exit status 2 for
a usage error (bad options, missing input files, missing optional dependencies are
reported before any work) and 1 for a job that failed; `--debug` shows the
traceback instead. Nothing here imports torch at module level."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__

EXAMPLES = ("triangle", "cube", "earth", "envphong", "pose", "distributed_fit")
# `glrast demo NAME` -> examples/<script>.py
DEMOS = {**{name: name for name in EXAMPLES[:-1]}, "distributed": "distributed_fit"}
# Optional dependencies (pip names) each command needs, checked before it starts: all of them
# come with `pip install 'glrast[examples]'`. tqdm is optional (plain progress lines without it).
NEEDS = {
    "demo triangle": ("pillow",),
    **{f"demo {name}": ("pillow", "matplotlib") for name in DEMOS if name != "triangle"},
    "render": ("pillow", "trimesh"),
    "view": ("trimesh",),
}
_MODULE_OF = {"pillow": "PIL", "matplotlib": "matplotlib", "trimesh": "trimesh", "tqdm": "tqdm"}


class UsageError(Exception):
    """A command line that cannot work (reported with exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `glrast: error: <subcommand>: <message>`, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        where = self.prog.removeprefix("glrast").strip()
        self.exit(2, f"glrast: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def require(command: str) -> None:
    """Raise UsageError naming the missing optional dependencies of `command` (a key of NEEDS),
    without importing anything."""
    missing = [name for name in NEEDS.get(command, ()) if importlib.util.find_spec(_MODULE_OF[name]) is None]
    if missing:
        raise UsageError(
            f"glrast {command} needs {', '.join(missing)}, not installed: pip install 'glrast[examples]'"
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _degrees_between(lo: float, hi: float):
    """argparse type: an angle in degrees strictly between lo and hi."""

    def parse(text: str) -> float:
        value = float(text)
        if not lo < value < hi:
            raise argparse.ArgumentTypeError(f"must be strictly between {lo:g} and {hi:g} degrees, got {value:g}")
        return value

    return parse


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .diagnostics import doctor, format_report

    report = doctor()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if any(p["severity"] == "error" for p in report["problems"]) else 0


def examples_dir() -> Path:
    """examples/ of a checkout (next to the package), or glrast/examples where a wheel ships it."""
    from ._resources import resource_dir

    try:
        return resource_dir("examples")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            "glrast demo runs the scripts in examples/ of a glrast checkout (git clone, then pip install -e .); "
            f"this installation has none ({e})"
        ) from e


def load_example(name: str) -> Any:
    """Import examples/<name>.py (once) as the module `glrast_example_<name>`.

    The folder goes on sys.path too, because the examples import their shared helpers
    (examples/_common.py) by plain name, as they do when run as scripts.
    """
    folder = examples_dir()
    script = folder / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"no example {name!r} in {folder} (the examples are {', '.join(EXAMPLES)})")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module_name = f"glrast_example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]  # no half-imported example left behind
            raise
    return sys.modules[module_name]


def _cmd_demo(args: argparse.Namespace) -> int:
    require(f"demo {args.name}")
    load_example(DEMOS[args.name]).main(list(args.options))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    from ._resources import resource_dir

    try:
        script = resource_dir("benchmarks") / "bench_raster.py"
    except FileNotFoundError:
        script = None
    if script is None or not script.is_file():
        print("glrast bench: benchmarks/bench_raster.py is not here (it ships with a glrast checkout)", file=sys.stderr)
        return 1
    options = [] if args.full else ["--quick"]
    for name in ("runs", "device"):
        if getattr(args, name) is not None:
            options += [f"--{name}", str(getattr(args, name))]
    return subprocess.call([sys.executable, str(script), *options])


def _cmd_render(args: argparse.Namespace) -> int:
    for what, path in (("mesh file, folder or list", args.mesh), ("--camera file", args.camera)):
        if path is not None and not path.exists():
            raise UsageError(f"render: no such {what}: {path}")
    if args.camera is not None and not args.camera.is_file():
        raise UsageError(f"render: --camera must be a JSON file, got the folder {args.camera}")
    require("render")
    from . import render

    start = time.perf_counter()
    options = render.Options(res=tuple(args.res), views=args.views, fov=args.fov, elevation=args.elevation,
                             camera=str(args.camera) if args.camera else None, device=args.device)  # fmt: skip
    outcomes = render.run(args.mesh, args.out, options, workers=args.workers, skip_existing=args.skip_existing,
                          log=args.log)  # fmt: skip
    print(render.summary(outcomes, args.out, time.perf_counter() - start))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _cmd_view(args: argparse.Namespace) -> int:
    for what, path in (("mesh file", args.mesh), ("--texture file", args.texture)):
        if path is not None and not path.is_file():
            raise UsageError(f"view: no such {what}: {path}")
    require("view")
    from .mesh_viewer import run

    return run(args.mesh, texture=args.texture, res=tuple(args.res), device=args.device, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glrast", description="glrast: differentiable rasterization")
    parser.add_argument("--version", action="version", version=f"glrast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
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

    demo = commands.add_parser(
        "demo",
        usage="glrast demo NAME [--out DIR] [--display] [options of the example]",
        help=f"run one of the examples ({', '.join(DEMOS)})",
        description="Run examples/NAME.py of this checkout. Every option after NAME goes to the example: "
        "--out DIR (default out/NAME), --display (target, current and difference live in a window, with the "
        "loss curve), --steps, --res, ... "
        "(glrast demo NAME --help lists them).",
    )
    demo.add_argument("name", choices=DEMOS, metavar="NAME", help=", ".join(DEMOS))
    demo.add_argument("options", nargs=argparse.REMAINDER, help="options of the example")
    demo.set_defaults(run=_cmd_demo)

    render = commands.add_parser(
        "render",
        help="render meshes to PNGs (headless, batch: a file, a folder or a list of meshes)",
        description="Render MESH (OBJ, PLY, GLB, STL, ... through trimesh) from several cameras into RGBA PNGs "
        "(view_000.png, ...; alpha = antialiased coverage), with its texture, else its vertex colours, else grey "
        "shading lit from the camera, and the cameras used into cameras.json (the format --camera reads). "
        "MESH may be a folder (every mesh below it, each into OUT/<its relative path>/) or a list file "
        "(.txt: one path a line). Meshes are shared among --workers processes and, under torchrun, among the "
        "ranks; a mesh that fails is reported (summary and render_log.json) while the others go on; the exit "
        "status is 1 if any failed. Files are written atomically: after a kill, --skip-existing renders only "
        "the meshes whose output is not complete.",
    )
    render.add_argument("mesh", type=Path, metavar="MESH", help="mesh file, folder of meshes, or list file")
    render.add_argument("--out", type=Path, required=True, help="output folder")
    render.add_argument("--res", type=_positive_int, nargs=2, default=(512, 512), metavar=("H", "W"),
                        help="image height and width in pixels (default 512 512)")  # fmt: skip
    render.add_argument("--views", type=_positive_int, default=8,
                        help="orbit cameras evenly spaced in azimuth (default 8)")  # fmt: skip
    render.add_argument("--fov", type=_degrees_between(0, 180), default=40.0,
                        help="vertical field of view in degrees, in (0, 180) (default 40)")  # fmt: skip
    render.add_argument("--elevation", type=_degrees_between(-90, 90), default=20.0,
                        help="orbit elevation in degrees, in (-90, 90) (default 20)")  # fmt: skip
    render.add_argument(
        "--camera", type=Path, default=None, metavar="JSON",
        help="OpenCV cameras instead of the orbit: a JSON list of {K: 3x3, R: 3x3, t: [3], width, height, "
        "[near, far]} in the mesh's coordinates (camera = R @ world + t, pixel centres at integers)",
    )  # fmt: skip
    render.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, cuda:LOCAL_RANK under torchrun, else cpu)")
    render.add_argument("--workers", type=_positive_int, default=1,
                        help="worker processes, each with its own GL context (default 1: in this process)")
    render.add_argument("--skip-existing", action="store_true",
                        help="skip meshes whose output is complete (its cameras.json exists), e.g. after a kill")
    render.add_argument("--log", type=Path, default=None,
                        help="JSON log of every mesh's outcome (default OUT/render_log.json)")
    render.set_defaults(run=_cmd_render)

    view = commands.add_parser(
        "view",
        help="look at a mesh file in a window (orbit, pan, zoom; shading, normals, depth, ids, UVs, wireframe)",
        description="Open MESH (OBJ, PLY, GLB, STL, ... through trimesh) in a window, rendered by glrast. "
        "Left drag orbits, right drag pans, the wheel zooms; keys 1-6 switch between shaded, normals, depth, "
        "triangle ids, a UV checker texture and wireframe; s saves a PNG of the window, r resets the camera, "
        "h prints the keys, q or Esc quits. The title shows the frame time and the triangle count. "
        "Needs a display (a desktop session, or xvfb-run).",
    )
    view.add_argument("mesh", type=Path, help="mesh file")
    view.add_argument("--texture", type=Path, default=None, metavar="IMG",
                      help="image to map through the mesh's texture coordinates (instead of its own texture)")
    view.add_argument("--res", type=_positive_int, nargs=2, default=(512, 512), metavar=("H", "W"),
                      help="rendered image height and width in pixels = the window's size (default 512 512)")
    view.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs saved with s (default .)")
    view.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    view.set_defaults(run=_cmd_view)  # fmt: skip

    bench = commands.add_parser(
        "bench",
        help="time rasterize + interpolate (benchmarks/bench_raster.py, quick mode)",
        description="Run benchmarks/bench_raster.py of this checkout, in its quick mode unless --full.",
    )
    bench.add_argument("--full", action="store_true", help="the full matrix (up to 1.3M triangles, 1024^2)")
    bench.add_argument("--runs", type=int, default=None, help="timed calls per case (bench_raster.py's default)")
    bench.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    bench.set_defaults(run=_cmd_bench)
    for sub in (doctor, demo, render, view, bench):  # also after the command (but not after demo NAME: the example's)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _fail(status: int, error: BaseException) -> int:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"glrast: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glrast` command (and `python -m glrast`); returns the exit status:
    0 done, 1 the job failed, 2 a usage error (argparse's own exit with 2 too), 130 interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("glrast: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        if args.debug:
            raise
        return _fail(2, e)
    except Exception as e:
        if args.debug:
            raise
        return _fail(1, e)
