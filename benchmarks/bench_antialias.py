"""Timing of antialias on icospheres: topology hash, forward, forward + backward.

The scene is bench_raster's (unit icosphere, camera at distance 3, fov 45
degrees, per-vertex colours); rasterize and interpolate run once per case and
are not timed. For each mesh and resolution:

* hash: antialias_construct_topology_hash(tri) alone;
* fwd: antialias with a prebuilt hash; fwd+hash: building the hash on every
  call (topology_hash=None, what code ported from nvdiffrast usually does);
* fwd+bwd: forward and backward (gradients to colour and positions), prebuilt hash.

Each mesh also runs as a triangle soup (every vertex duplicated per triangle, so
every edge is a silhouette: the worst case). Times are the median of several
calls after a warm-up, in milliseconds; "blended px" counts the pixels that
antialias changes.

    python benchmarks/bench_antialias.py            # 5k, 80k, 1.3M triangles at 512^2 and 1024^2
    python benchmarks/bench_antialias.py --quick    # 5k and 80k triangles, fewer runs
"""

from __future__ import annotations

import argparse
import os

import torch
from _timing import LEVELS, icosphere_scene, timed

import glrast as dr


def bench_case(glctx, device, level: int, soup: bool, res: int, runs: int) -> str:
    pos, tri, colors = (x.to(device) for x in icosphere_scene(level, soup))
    with torch.no_grad():
        rast, _ = dr.rasterize(glctx, pos, tri, (res, res), grad_db=False)
        color, _ = dr.interpolate(colors, rast, tri)
    topo = dr.antialias_construct_topology_hash(tri)
    with torch.no_grad():
        out = dr.antialias(color, rast, pos, tri, topology_hash=topo)
        pairs = int((out != color).any(-1).sum())
        _, t_hash = timed(lambda: dr.antialias_construct_topology_hash(tri), device, runs)
        _, t_fwd = timed(lambda: dr.antialias(color, rast, pos, tri, topology_hash=topo), device, runs)
        _, t_fwd_hash = timed(lambda: dr.antialias(color, rast, pos, tri), device, runs)
    pos_g, color_g = pos.clone().requires_grad_(True), color.clone().requires_grad_(True)
    grad_out = torch.randn_like(color)

    def forward_backward():
        out = dr.antialias(color_g, rast, pos_g, tri, topology_hash=topo)
        torch.autograd.grad(out, (color_g, pos_g), grad_out)

    _, t_fb = timed(forward_backward, device, runs)
    kind = "soup" if soup else "mesh"
    return (
        f"| {device.type} | {tri.shape[0]:,} {kind} | {res}² | {pairs:,} | {t_hash:.1f} | {t_fwd:.1f} "
        f"| {t_fwd_hash:.1f} | {t_fb:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k and 80k triangles, 3 timed runs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    runs = 3 if args.quick else args.runs
    sizes = ["5k", "80k"] if args.quick else list(LEVELS)
    glctx = dr.RasterizeGLContext(device=device)
    print(f"device: {device} ({glctx.info['renderer']}), {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print("| device | triangles | res | blended px | hash (ms) | fwd (ms) | fwd+hash (ms) | fwd+bwd (ms) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for soup in (False, True):
            for res in (512, 1024):
                print(bench_case(glctx, device, LEVELS[size], soup, res, runs), flush=True)
    glctx.release()


if __name__ == "__main__":
    main()
