"""Timing of rasterize + interpolate on icospheres: forward, and forward + backward.

For each mesh size and resolution: the first call (kernel compilation included,
with an empty kernel cache) and the median of several calls after a warm-up.
The scene is the standard job's (benchmarks/standard_job.py): unit icosphere,
camera at distance 3, fov 45 degrees, per-vertex colours, MSE loss.

    python benchmarks/bench_raster.py             # full matrix
    python benchmarks/bench_raster.py --quick     # 5k and 80k triangles, 256^2 and 512^2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import glrast as dr
from glrast import camera, mesh

LEVELS = {"5k": 4, "80k": 6, "1.3M": 8}


def scene(level: int, device: torch.device):
    verts, tri = mesh.icosphere(level)
    mvp = camera.perspective(45.0, 1.0, 0.1, 10.0) @ camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    pos = camera.transform(mvp, verts)
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0))
    return pos.to(device), tri.to(device), colors.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, runs: int) -> tuple[float, float]:
    """(first call, median of `runs` calls after one warm-up) in milliseconds."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * first, 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small meshes and resolutions only")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    # An empty kernel cache, so that the first call shows compilation time.
    os.environ["GLRAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="glrast-bench-cache-")
    sizes = ["5k", "80k"] if args.quick else list(LEVELS)
    resolutions = [256, 512] if args.quick else [256, 512, 1024]
    glctx = dr.RasterizeGLContext(device=device)
    print(f"device: {device} ({glctx.info['renderer']}), torch threads: {torch.get_num_threads()}")
    print("| tris | res | first call fwd+bwd (ms) | fwd (ms) | fwd+bwd (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for size in sizes:
        pos, tri, colors = scene(LEVELS[size], device)
        for res in resolutions:
            pos_g = pos.clone().requires_grad_(True)
            col_g = colors.clone().requires_grad_(True)

            def forward(p=pos, c=colors, res=res):
                rast, _ = dr.rasterize(glctx, p, tri, (res, res))
                image, _ = dr.interpolate(c, rast, tri)
                return image

            def forward_backward(res=res):
                image = forward(pos_g, col_g, res)
                image.square().mean().backward()

            first, fwd_bwd = timed(forward_backward, device, args.runs)
            with torch.no_grad():
                _, fwd = timed(forward, device, args.runs)
            print(f"| {tri.shape[0]:,} | {res}² | {first:.0f} | {fwd:.1f} | {fwd_bwd:.1f} |", flush=True)
    glctx.release()


if __name__ == "__main__":
    main()
