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
import tempfile

import torch
from _timing import LEVELS, icosphere_scene, timed

import glrast as dr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small meshes and resolutions only")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    # An empty kernel cache, so that the first call shows compilation time.
    with tempfile.TemporaryDirectory(prefix="glrast-bench-cache-") as cache:
        os.environ["GLRAST_CACHE_DIR"] = cache
        run(args)


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    sizes = ["5k", "80k"] if args.quick else list(LEVELS)
    resolutions = [256, 512] if args.quick else [256, 512, 1024]
    glctx = dr.RasterizeGLContext(device=device)
    print(f"device: {device} ({glctx.info['renderer']}), torch threads: {torch.get_num_threads()}")
    print("| tris | res | first call fwd+bwd (ms) | fwd (ms) | fwd+bwd (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for size in sizes:
        pos, tri, colors = (x.to(device) for x in icosphere_scene(LEVELS[size]))
        for res in resolutions:
            pos_g = pos.clone().requires_grad_(True)
            col_g = colors.clone().requires_grad_(True)

            def forward(p=pos, c=colors, tri=tri, res=res):
                rast, _ = dr.rasterize(glctx, p, tri, (res, res))
                image, _ = dr.interpolate(c, rast, tri)
                return image

            def forward_backward(inputs=(pos_g, col_g), tri=tri, res=res):
                image = forward(*inputs, tri=tri, res=res)
                image.square().mean().backward()

            first, fwd_bwd = timed(forward_backward, device, args.runs)
            with torch.no_grad():
                _, fwd = timed(forward, device, args.runs)
            print(f"| {tri.shape[0]:,} | {res}² | {first:.0f} | {fwd:.1f} | {fwd_bwd:.1f} |", flush=True)
    glctx.release()


if __name__ == "__main__":
    main()
