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
import math
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


def _orbit_cameras(views: int, fov: float, elevation: float, width: int, height: int) -> list[Any]:
    """Clip matrices of `views` cameras evenly spaced in azimuth around the unit sphere, looking at its centre."""
    import torch

    from . import camera

    # far enough that the unit sphere fits the narrower field of view, with a margin
    half = math.radians(fov) / 2
    half = min(half, math.atan(math.tan(half) * width / height))
    dist = 1.1 / math.sin(half)
    proj = camera.perspective(fov, width / height, max(dist - 1.5, 0.05 * dist), dist + 1.5)
    el = math.radians(elevation)
    mats = []
    for k in range(views):
        az = 2 * math.pi * k / views
        eye = dist * torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        mats.append(proj @ camera.look_at(eye, torch.zeros(3)))
    return mats


def _read_cameras(path: Path, pos: Any) -> list[tuple[Any, int, int]]:
    """(clip matrix, width, height) per entry of an OpenCV camera file (see `glrast render --help`)."""
    import torch

    from . import camera

    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON camera file ({e})") from None
    entries = data if isinstance(data, list) else [data]
    out = []
    for k, cam in enumerate(entries):
        try:
            K, R, t = (torch.tensor(cam[key], dtype=torch.float64) for key in ("K", "R", "t"))
            width, height = int(cam["width"]), int(cam["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: camera {k} needs K (3x3), R (3x3), t (3), width and height ({e})") from e
        depth = (pos.double().cpu() @ R.T + t)[:, 2]
        near = cam.get("near") or max(float(depth.min()) * 0.9, float(depth.max()) * 1e-3, 1e-6)
        far = cam.get("far") or max(float(depth.max()) * 1.1, 2 * near)
        out.append((camera.from_opencv(K, R, t, width, height, near, far, flip_y=True).float(), width, height))
    return out


def _cmd_render(args: argparse.Namespace) -> int:
    for what, path in (("mesh file", args.mesh), ("--camera file", args.camera)):
        if path is not None and not path.is_file():
            raise UsageError(f"render: no such {what}: {path}")
    require("render")
    import numpy as np
    from PIL import Image

    import glrast as dr

    from . import camera, mesh
    from .context import resolve_device
    from .shading import shade, unit_sphere_transform

    start = time.perf_counter()
    device = resolve_device(args.device, "glrast render --device")
    m = mesh.load(args.mesh, device=device)
    if args.camera:
        cams = _read_cameras(Path(args.camera), m.pos)
    else:
        height, width = args.res
        # orbit cameras around the mesh's bounding sphere: centre it and scale it to radius 1
        to_unit, _, _ = unit_sphere_transform(m.pos)
        cams = [(mvp @ to_unit, width, height) for mvp in _orbit_cameras(args.views, args.fov, args.elevation,
                                                                          width, height)]  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with dr.RasterizeGLContext(device=device) as glctx:
        for k, (mvp, width, height) in enumerate(cams):
            K, R, t, near, far = camera.to_opencv(mvp.double(), width, height, flip_y=True)
            rgba = shade(glctx, m, mvp, (-R.T @ t).float(), height, width)
            pixels = (rgba.flip(0).cpu().numpy() * 255 + 0.5).astype(np.uint8)  # row 0 of a PNG is the top
            Image.fromarray(pixels, "RGBA").save(out / f"view_{k:03d}.png")
            records.append({"width": width, "height": height, "K": K.tolist(), "R": R.tolist(), "t": t.tolist(),
                            "near": float(near), "far": float(far)})  # fmt: skip
    (out / "cameras.json").write_text(json.dumps(records, indent=1))
    print(f"glrast render: {len(cams)} views of {args.mesh} ({m.tri.shape[0]} triangles) -> {out}/view_*.png "
          f"and cameras.json, {time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0


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
        help="render a mesh file to PNGs (headless, batch)",
        description="Render MESH (OBJ, PLY, GLB, ... through trimesh) from several cameras into RGBA PNGs "
        "(view_000.png, ...; alpha = antialiased coverage), with its texture, else its vertex colours, else grey "
        "shading lit from the camera. Writes the cameras used to cameras.json in the format --camera reads.",
    )
    render.add_argument("mesh", type=Path, help="mesh file")
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
    render.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
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
