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

    python benchmarks/standard_job.py --tris 80k --res 512 --mode vis
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import glrast as dr
from glrast import mesh

LEVELS = {"5k": 4, "80k": 6, "1.3m": 8}
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
    """[res, res, 3], row 0 = top of the image: a smooth colour pattern."""
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    y, x = torch.meshgrid(c, c, indexing="ij")  # y grows downwards
    return torch.stack([0.5 + 0.4 * torch.sin(6.0 * x), 0.5 + 0.4 * torch.cos(5.0 * y), torch.full_like(x, 0.3)], -1)


def vertex_colors(num_verts: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((num_verts, 3), dtype=np.float32))


def moved(verts: torch.Tensor, step: int) -> torch.Tensor:
    return verts * (1.0 + 1e-3 * ((step % 5) - 2))


def time_steps(step: Callable[[int], None], runs: int, min_total_s: float = 1.0, max_runs: int = 30) -> dict:
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


def run(tris: str, res: int, mode: str, runs: int = 5, device: str = "cpu") -> dict:
    dev = torch.device(device)
    verts, tri = mesh.icosphere(LEVELS[tris])
    verts, tri = verts.to(dev), tri.to(dev)
    mvp = projection().to(dev)
    colors0 = vertex_colors(verts.shape[0]).to(dev)
    # Row 0 of rast is the bottom of the image: the target is flipped to match.
    target = target_image(res).flip(0)[None].to(dev)
    glctx = dr.RasterizeGLContext(device=dev, output_db=False)
    topology = dr.antialias_construct_topology_hash(tri) if mode == "vis" else None
    moves = mode in ("fwd_dyn", "pos", "vis")
    static_pos = (torch.cat([verts, torch.ones_like(verts[:, :1])], 1) @ mvp.T)[None].contiguous()
    state: dict = {}

    def render(pos_clip: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        rast, _ = dr.rasterize(glctx, pos_clip, tri, (res, res), grad_db=False)
        image, _ = dr.interpolate(colors, rast, tri)
        if mode == "vis":
            image = dr.antialias(image, rast, pos_clip, tri, topology_hash=topology)
        return image

    def step(i: int) -> None:
        world = moved(verts, i) if moves else verts
        if mode in ("pos", "vis"):
            world = world.clone().requires_grad_(True)
        pos_clip = (torch.cat([world, torch.ones_like(world[:, :1])], 1) @ mvp.T)[None] if moves else static_pos
        if mode.startswith("fwd"):
            with torch.no_grad():
                state["image"] = render(pos_clip, colors0)
        else:
            colors = colors0.clone().requires_grad_(True)
            image = render(pos_clip, colors)
            loss = (image - target).square().mean()
            loss.backward()
            state.update(image=image.detach(), loss=loss.item(), grad_col=colors.grad, grad_pos=world.grad)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    timing = time_steps(step, runs)
    image = state["image"]
    record = {
        "peer": "glrast",
        "version": f"glrast {dr.__version__}, torch {torch.__version__}",
        "renderer": glctx.info["renderer"],
        "mode": mode,
        "tris": int(tri.shape[0]),
        "verts": int(verts.shape[0]),
        "res": res,
        "threads": torch.get_num_threads(),
        **timing,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "coverage": round(float((image.sum(-1) > 0).float().mean()), 4),
        "img_mean": round(float(image.mean()), 5),
        "loss": round(state.get("loss", float((image - target).square().mean())), 6),
    }
    if "grad_col" in state:
        record["grad_col_l1"] = float(state["grad_col"].abs().sum())
        if state["grad_pos"] is not None:
            record["grad_pos_l1"] = float(state["grad_pos"].abs().sum())
    glctx.release()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tris", default="80k", choices=list(LEVELS))
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--mode", default="fwd", choices=["fwd", "fwd_dyn", "col", "pos", "vis"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print("RESULT " + json.dumps(run(args.tris, args.res, args.mode, args.runs, args.device)), flush=True)


if __name__ == "__main__":
    main()
