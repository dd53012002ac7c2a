"""The `glrast` command. One argparse subcommand per task; each is a function
`_cmd_<name>(args) -> int` registered in `build_parser()`."""

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

EXAMPLES = ("triangle", "cube", "earth", "envphong", "pose")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor, format_report

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
    load_example(args.name).main(list(args.options))
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

    data = json.loads(path.read_text())
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
    import numpy as np
    import torch

    import glrast as dr

    from . import camera, mesh
    from .shading import shade, unit_sphere_transform

    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("glrast render writes PNGs with pillow: pip install pillow") from e
    start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not -90.0 < args.elevation < 90.0:
        raise ValueError(
            f"glrast render: --elevation must be strictly between -90 and 90 degrees, got {args.elevation}"
        )
    if not 0.0 < args.fov < 180.0:
        raise ValueError(f"glrast render: --fov must be strictly between 0 and 180 degrees, got {args.fov}")
    if min(args.res) < 1 or args.views < 1:
        raise ValueError(f"glrast render: --res and --views must be >= 1, got --res {args.res} --views {args.views}")
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
    from .mesh_viewer import run
    from .viewer import ViewerUnavailableError

    try:
        return run(args.mesh, texture=args.texture, res=tuple(args.res), device=args.device, out=args.out)
    except ViewerUnavailableError as e:
        print(e, file=sys.stderr)
        return 1


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

    demo = commands.add_parser(
        "demo",
        usage="glrast demo NAME [--out DIR] [--display] [options of the example]",
        help="run one of the examples (triangle, cube, earth, envphong, pose)",
        description="Run examples/NAME.py of this checkout. Every option after NAME goes to the example: "
        "--out DIR (default out/NAME), --display (target, current and difference live in a window, with the "
        "loss curve), --steps, --res, ... "
        "(glrast demo NAME --help lists them).",
    )
    demo.add_argument("name", choices=EXAMPLES, metavar="NAME", help=", ".join(EXAMPLES))
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
    render.add_argument("--res", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                        help="image height and width in pixels (default 512 512)")  # fmt: skip
    render.add_argument("--views", type=int, default=8, help="orbit cameras evenly spaced in azimuth (default 8)")
    render.add_argument("--fov", type=float, default=40.0, help="vertical field of view in degrees (default 40)")
    render.add_argument("--elevation", type=float, default=20.0, help="orbit elevation in degrees (default 20)")
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
    view.add_argument("--res", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `glrast` command (and `python -m glrast`); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)
