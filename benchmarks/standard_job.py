"""The standard job through glrast, with the flags and RESULT line of the peers' benchmarks.

Job: unit icosphere (20·4^L triangles, --tris 5k|80k|1.3m), random per-vertex RGB
colours (numpy default_rng(0)), pinhole camera at (0, 0, 3) looking at the origin,
vertical fov 45°, near 0.1, far 10, square images (--res); one sample per pixel at the
pixel centre; MSE against a fixed analytic target image. Modes:

  fwd      forward (rasterize -> interpolate), static geometry
  fwd_dyn  forward, vertices moved every step (a radial scale of ±0.1%)
  col      forward + MSE + backward to the colours, static geometry
  pos      as col, plus gradients to the vertex positions through the barycentrics
           (no silhouette term), vertices moved every step
  vis      as pos, with antialias: silhouette (visibility) gradients too

Timing: a first call (kernel compilation included), a second call, then at least --runs
calls, more (up to 30) until 1 s is spent; the median is reported. Prints
`RESULT {json}` with median/first/second/min/max seconds, runs, peak RSS, loss and
gradient norms.

Where the time goes: --breakdown K runs K more steps with the device synchronised between
stages and adds their mean per-stage milliseconds to the record ("breakdown_ms": transform,
rasterize, interpolate, antialias, loss, then each op's backward); --cprofile N profiles K
more steps (K = --breakdown, or 5) and prints the N functions with the most own time; --calls K
(CPU) runs K more steps timing each host kernel by name and the GL pass's draw calls and
readbacks, and adds their mean ms per step ("calls_ms"). --compile runs
the forward and loss through torch.compile(fullgraph=True) (the backward through AOT autograd's
compiled graph); its first call includes compiling.

    python benchmarks/standard_job.py --tris 80k --res 512 --mode vis
    python benchmarks/standard_job.py --tris 1.3m --res 512 --mode vis --breakdown 5 --cprofile 15
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch
from _fit_record import peak_rss_mb, rss_mb

import glrast as dr
from glrast import glcalls, kernels, mesh

LEVELS = {"5k": 4, "80k": 6, "1.3m": 8}
MODES = ["fwd", "fwd_dyn", "col", "pos", "vis"]
EYE_DISTANCE = 3.0
FOV_Y_DEG, NEAR, FAR = 45.0, 0.1, 10.0


def projection() -> torch.Tensor:
    """Clip-from-world matrix: perspective(45°, 1, 0.1, 10) of a camera at (0, 0, 3) looking down -z."""
    f = 1.0 / math.tan(math.radians(FOV_Y_DEG) / 2)
    proj = torch.tensor(
        [
            [f, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, (FAR + NEAR) / (NEAR - FAR), 2 * FAR * NEAR / (NEAR - FAR)],
            [0, 0, -1, 0],
        ],
        dtype=torch.float64,
    )
    view = torch.eye(4, dtype=torch.float64)
    view[2, 3] = -EYE_DISTANCE
    return (proj @ view).float()


def target_image(res: int) -> torch.Tensor:
    """[res, res, 3] float32, row 0 = top of the image: a smooth colour pattern.
    Computed with numpy in float32 so that every peer gets the very same array."""
    c = (np.arange(res, dtype=np.float32) + np.float32(0.5)) / np.float32(res)
    x, y = np.meshgrid(c, c)  # y grows downwards
    rgb = [0.5 + 0.4 * np.sin(6.0 * x), 0.5 + 0.4 * np.cos(5.0 * y), np.full_like(x, 0.3)]
    return torch.from_numpy(np.stack(rgb, axis=-1).astype(np.float32))


def vertex_colors(num_verts: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((num_verts, 3), dtype=np.float32))


def moved(verts: torch.Tensor, step: int) -> torch.Tensor:
    """Positions of step `step` of a moving-geometry mode: a radial scale of -0.2% .. +0.2%."""
    return verts * (1.0 + 1e-3 * ((step % 5) - 2))


def time_steps(step: Callable[[int], None], runs: int, min_total_s: float = 1.0, max_runs: int = 30) -> dict:
    """A first call, a second (warm-up) call, then >= runs timed calls, more (up to max_runs)
    until min_total_s has been spent. Seconds."""
    t0 = time.perf_counter()
    step(0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    step(1)
    second = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < runs or (sum(times) < min_total_s and len(times) < max_runs):
        t0 = time.perf_counter()
        step(len(times) + 2)
        times.append(time.perf_counter() - t0)
    return {
        "first_s": round(first, 4),
        "second_s": round(second, 4),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "runs": len(times),
    }


@contextlib.contextmanager
def timed_calls() -> Iterator[dict[str, float]]:
    """Seconds spent in each host kernel (by name) and in the GL pass's draw calls ("gl draw")
    and readbacks ("gl readback": it waits for llvmpipe's rasterizer threads) while the block
    runs, summed. CPU only: CUDA launches return before their kernels run."""
    totals: dict[str, float] = defaultdict(float)
    launch, draw, read = kernels.HostModule.launch, glcalls.draw_triangles, glcalls.read_pixels

    def timed(name_of: Callable[..., str], fn: Callable) -> Callable:
        def call(*args):
            t0 = time.perf_counter()
            fn(*args)
            totals[name_of(*args)] += time.perf_counter() - t0

        return call

    kernels.HostModule.launch = timed(lambda module, kernel, *rest: kernel, launch)
    glcalls.draw_triangles = timed(lambda *args: "gl draw", draw)
    glcalls.read_pixels = timed(lambda *args: "gl readback", read)
    try:
        yield totals
    finally:
        kernels.HostModule.launch, glcalls.draw_triangles, glcalls.read_pixels = launch, draw, read


class Laps:
    """Accumulates the wall time between marks into named stages, synchronising the device
    at every mark so that asynchronous CUDA work is charged to the stage that queued it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.last = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.totals[stage] += now - self.last
        self.last = now

    def hook(self, tensor: torch.Tensor, stage: str) -> None:
        """Mark `stage` when the gradient of `tensor` arrives (that is, when the backward of
        everything downstream of it has run)."""
        tensor.register_hook(lambda grad: self(stage))


def run(
    tris: str,
    res: int,
    mode: str,
    runs: int = 5,
    device: str = "cpu",
    min_total_s: float = 1.0,
    breakdown: int = 0,
    cprofile: int = 0,
    save: str = "",
    compile: bool = False,
    calls: int = 0,
) -> dict:
    """One case of the standard job; returns the RESULT record. breakdown: steps timed stage by
    stage after the timed loop; cprofile: print this many functions of a cProfile of those steps;
    save: a .npy path for the last image, row 0 = top (the peers' orientation); compile: the
    forward and loss through torch.compile(fullgraph=True) (its first call includes compiling);
    calls: this many more steps with each host kernel and GL call timed (see timed_calls)."""
    if compile and breakdown:
        raise ValueError("standard_job: breakdown times the stages of an eager step; it cannot run with compile")
    dev = torch.device(device)
    if calls and dev.type != "cpu":
        raise ValueError(f"standard_job: calls times host kernels and llvmpipe's GL calls; device is {dev}, not cpu")
    # The backend first, as the peers load theirs (mi.set_variant) before their reading after imports:
    # the GL context maps the driver's code (llvmpipe's LLVM on the CPU), about 60 MB.
    glctx = dr.RasterizeGLContext(device=dev, output_db=False)
    rss_after_backend = rss_mb()
    verts, tri = mesh.icosphere(LEVELS[tris])
    verts, tri = verts.to(dev), tri.to(dev)
    mvp = projection().to(dev)
    colors0 = vertex_colors(verts.shape[0]).to(dev)
    # Row 0 of rast is the bottom of the image (clip y = -1); row 0 of the target is the top.
    target = target_image(res).flip(0)[None].to(dev)
    topology = dr.antialias_construct_topology_hash(tri) if mode == "vis" else None
    moves = mode in ("fwd_dyn", "pos", "vis")
    static_pos = (torch.cat([verts, torch.ones_like(verts[:, :1])], 1) @ mvp.T)[None].contiguous()
    state: dict = {}

    def forward(world: torch.Tensor, colors: torch.Tensor, laps: Laps | None) -> tuple:
        """(image, loss or None): the transform, rasterize, interpolate, antialias in "vis" and the loss,
        which --compile compiles (fullgraph=True; laps then None)."""
        lap = laps or (lambda stage: None)
        pos_clip = (torch.cat([world, torch.ones_like(world[:, :1])], 1) @ mvp.T)[None] if moves else static_pos
        lap("transform")
        with torch.set_grad_enabled(not mode.startswith("fwd")):
            rast, _ = dr.rasterize(glctx, pos_clip, tri, (res, res), grad_db=False)
            lap("rasterize")
            image = dr.interpolate(colors, rast, tri)[0]
            lap("interpolate")
            if laps and rast.requires_grad:
                laps.hook(rast, "interpolate backward")
            if mode == "vis":
                if laps:
                    laps.hook(image, "antialias backward")
                image = dr.antialias(image, rast, pos_clip, tri, topology_hash=topology)
                lap("antialias")
        if mode.startswith("fwd"):
            return image, None
        loss = torch.nn.functional.mse_loss(image, target)  # one pass each way: no image-sized temporaries
        lap("loss")
        if laps:
            laps.hook(image, "loss backward")
            if pos_clip.requires_grad:
                laps.hook(pos_clip, "rasterize backward")
        return image, loss

    render = torch.compile(forward, fullgraph=True) if compile else forward

    def step(i: int, laps: Laps | None = None) -> None:
        lap = laps or (lambda stage: None)
        if laps:
            laps.start()
        world = moved(verts, i) if moves else verts
        if mode in ("pos", "vis"):
            world.requires_grad_(True)
        colors = colors0 if mode.startswith("fwd") else colors0.clone().requires_grad_(True)
        image, loss = render(world, colors, laps)
        if loss is None:
            state["image"] = image
            lap("rest")
            return
        loss.backward()
        # colour-only modes: interpolate's backward is the last op; else the transform's
        lap("transform backward" if world.requires_grad else "interpolate backward")
        state.update(image=image.detach(), loss=loss.item(), grad_col=colors.grad, grad_pos=world.grad)
        lap("rest")

    def synced_step(i: int) -> None:
        step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    timing = time_steps(synced_step, runs, min_total_s)
    image = state["image"]
    record = {
        "peer": "glrast",
        "version": f"glrast {dr.__version__}, torch {torch.__version__}",
        "renderer": glctx.info["renderer"],
        "mode": mode,
        "tris": int(tri.shape[0]),
        "verts": int(verts.shape[0]),
        "res": res,
        "device": str(dev),
        "compiled": compile,
        "threads": torch.get_num_threads(),
        **timing,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_backend_mb": rss_after_backend,
        "coverage": round(float((image.sum(-1) > 0).float().mean()), 4),
        "img_mean": round(float(image.mean()), 5),
        "loss": round(state.get("loss", float((image - target).square().mean())), 6),
    }
    if "grad_col" in state:
        record["grad_col_l1"] = float(state["grad_col"].abs().sum())
        if state["grad_pos"] is not None:
            record["grad_pos_l1"] = float(state["grad_pos"].abs().sum())
    if breakdown:
        laps = Laps(dev)
        for k in range(breakdown):
            step(timing["runs"] + 2 + k, laps)
        record["breakdown_ms"] = {stage: round(1e3 * t / breakdown, 2) for stage, t in laps.totals.items()}
    if calls:
        with timed_calls() as totals:
            for k in range(calls):
                step(timing["runs"] + 2 + k)
        record["calls_ms"] = {name: round(1e3 * t / calls, 2) for name, t in sorted(totals.items())}
    if cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        for k in range(breakdown or 5):
            synced_step(k)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(cprofile)
        print(text.getvalue(), file=sys.stderr)
    if save:
        np.save(save, image.flip(1)[0].cpu().numpy())
    glctx.release()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tris", default="80k", choices=list(LEVELS))
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--mode", default="fwd", choices=MODES)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--breakdown", type=int, default=0, metavar="K", help="time K more steps stage by stage")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the N costliest functions")
    parser.add_argument("--calls", type=int, default=0, metavar="K", help="time K more steps kernel by kernel (CPU)")
    parser.add_argument("--save", default="", help="save the last image (row 0 = top, like the peers) as .npy")
    parser.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the forward and loss")
    args = parser.parse_args()
    if args.compile and args.breakdown:
        parser.error("--breakdown times the stages of an eager step; it cannot run with --compile")
    rss_after_import = rss_mb()  # the interpreter, torch and glrast, before any work
    record = run(
        args.tris,
        args.res,
        args.mode,
        args.runs,
        args.device,
        breakdown=args.breakdown,
        cprofile=args.cprofile,
        save=args.save,
        compile=args.compile,
        calls=args.calls,
    )
    record["rss_after_import_mb"] = rss_after_import
    print("RESULT " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
