"""What the viewer costs: show() per call, `glrast view`'s frame time, and --display in training.

* show(): one RGB image, CPU tensor, float (in [0, 1]) and uint8, at 512² and 1024², in a
  window of the image's size. "uploaded": max_fps=None, so every call converts, uploads,
  draws and swaps (median per call; "compose" is the conversion into the RGBA8 canvas
  alone). "rate-limited": max_fps=30, the mean cost of a call in a tight loop of 2 s, the
  few frames it uploads included, and how many it uploaded.
* glrast view: the frame time (render + show) of the 80k-triangle icosphere at 512² in
  each mode, rendered through a headless context (what `glrast view` does) and through the
  window's own GL context (RasterizeGLContext(gl_context=viewer.gl)), alternating.
* --display: examples/cube.py trained with and without the live display, alternating runs
  with the same seed; the slowdown is the ratio of the median times, of training alone and
  with the window's opening (its creation and first frame, a one-off cost) added.

Needs a display (a desktop session, or a virtual one):

    xvfb-run -a -s "-screen 0 1280x1024x24 -noreset" python benchmarks/bench_viewer.py
    ... python benchmarks/bench_viewer.py --quick     # 256², the 5k icosphere, a short cube run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _timing import LEVELS

import glrast as dr
from glrast import mesh
from glrast.mesh_viewer import MeshView
from glrast.shading import MODES
from glrast.viewer import Viewer, compose


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def show_costs(res: int, dtype: torch.dtype, runs: int) -> str:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(res, res, 3, generator=g)
    image = (image * 255).to(torch.uint8) if dtype == torch.uint8 else image
    with Viewer(width=res, height=res, max_fps=None) as viewer:
        uploaded = median_ms(lambda: viewer.show(image), runs)
    converting = median_ms(lambda: compose([image]), runs)
    with Viewer(width=res, height=res, max_fps=30) as viewer:
        viewer.show(image)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            viewer.show(image)
            calls += 1
        per_call_us = 1e6 * (time.perf_counter() - start) / calls
        frames = viewer.frames - 1
    name = "float" if dtype.is_floating_point else "uint8"
    return (f"| {res}² | {name} | {uploaded:.2f} | {converting:.2f} | {per_call_us:.1f} | {calls:,} | {frames} |")


def view_frames(level: int, res: int, runs: int) -> list[str]:
    pos, tri = mesh.icosphere(level)
    m = mesh.Mesh(pos=pos, tri=tri, normals=mesh.vertex_normals(pos, tri), uv=pos[:, :2] * 0.5 + 0.5)
    rows = []
    with Viewer(width=res, height=res, max_fps=None) as viewer:
        headless = dr.RasterizeGLContext(device="cpu")
        window = dr.RasterizeGLContext(device="cpu", gl_context=viewer.gl, mode="manual")
        apps = {"headless": MeshView(viewer, headless, m, "icosphere", (res, res), Path(".")),
                "window": MeshView(viewer, window, m, "icosphere", (res, res), Path("."))}  # fmt: skip

        def frame(name: str) -> float:
            app = apps[name]
            app.camera.orbit(3.0, 0.0)  # a new view every frame, as while dragging
            start = time.perf_counter()
            if name == "window":
                with viewer.activate():
                    image = app.render()
            else:
                image = app.render()
            viewer.show(image)
            return time.perf_counter() - start

        for mode in MODES:
            times: dict[str, list[float]] = {"headless": [], "window": []}
            for app in apps.values():
                app.mode = mode
            for name in times:
                frame(name)  # warm-up
            for _ in range(runs):
                for name in times:
                    times[name].append(frame(name))
            h, w = (1e3 * statistics.median(times[k]) for k in ("headless", "window"))
            rows.append(f"| {mode} | {h:.1f} | {w:.1f} |")
        with viewer.activate():
            window.release()
        headless.release()
    return rows


def cube_runs(steps: int, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Training times without and with the display, and the times to open it (the window and
    its first frame, which builds the window's GL objects), in seconds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import _common
    import cube

    glctx = dr.RasterizeGLContext(device="cpu")
    cube.run(steps=20, device="cpu", glctx=glctx, quiet=True)  # warm-up: kernels loaded, first calls made
    plain, shown, opening = [], [], []
    blank = torch.zeros(16, 16, 3)
    for _ in range(repeats):
        for times, enabled in ((plain, False), (shown, True)):
            start = time.perf_counter()
            with _common.LiveDisplay(enabled, "bench cube") as display:
                if enabled:
                    display.update(blank, blank, 1.0)
                    opening.append(time.perf_counter() - start)
                start = time.perf_counter()
                cube.run(steps=steps, device="cpu", glctx=glctx, quiet=True, display=display if enabled else None)
                times.append(time.perf_counter() - start)
    glctx.release()
    return plain, shown, opening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256², the 5k icosphere, a short cube run")
    parser.add_argument("--runs", type=int, default=None, help="timed calls per case")
    parser.add_argument("--steps", type=int, default=None, help="cube steps per run (default 400; quick 60)")
    parser.add_argument("--repeats", type=int, default=None, help="cube runs with and without (default 3; quick 1)")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    print(f"# bench_viewer: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"DISPLAY={os.environ.get('DISPLAY')}")  # fmt: skip
    print("\n## show(): per call (ms), one RGB image on the CPU\n")
    print("| size | dtype | uploaded (ms) | compose (ms) | rate-limited, 30 fps (µs/call) | calls in 2 s | frames |")
    print("|---|---|---|---|---|---|---|")
    for res in (256,) if args.quick else (512, 1024):
        for dtype in (torch.float32, torch.uint8):
            print(show_costs(res, dtype, runs), flush=True)

    level = LEVELS["5k" if args.quick else "80k"]
    res = 256 if args.quick else 512
    print(f"\n## glrast view: frame time (ms), icosphere of {20 * 4**level:,} triangles at {res}²\n")
    print("| mode | headless context | window's context |")
    print("|---|---|---|")
    for row in view_frames(level, res, runs):
        print(row, flush=True)

    steps = args.steps or (60 if args.quick else 400)
    repeats = args.repeats or (1 if args.quick else 3)
    plain, shown, opening = cube_runs(steps, repeats)
    without, with_, open_ = (statistics.median(t) for t in (plain, shown, opening))
    print(f"\n## examples/cube.py, {steps} steps: without / with --display (s), {repeats} runs each, alternating\n")
    print(f"without: {' '.join(f'{t:.2f}' for t in plain)}; with: {' '.join(f'{t:.2f}' for t in shown)}; "
          f"opening the window (its first frame included): {' '.join(f'{t:.2f}' for t in opening)}")  # fmt: skip
    print(f"slowdown of the medians: training {100 * (with_ / without - 1):+.1f}% (target < 5%), "
          f"with the opening {100 * ((with_ + open_) / without - 1):+.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
