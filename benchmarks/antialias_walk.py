"""How many pixels antialias blends on a dense mesh with glrast's rule (the search for a silhouette
walks on through the sub-pixel triangles that continue the surface) and with nvdiffrast's (only the
edges of the nearer pixel's own triangle), counted on a coverage mask (1 covered, 0 background).

nvdiffrast's rule is emulated with the plain-torch reference (tests/reference/antialias.py) limited to
a walk of one triangle; glrast's count comes from the kernel. Prints one line per mesh.

    python benchmarks/antialias_walk.py                # uv spheres of 4k, 16k and 30k triangles at 96^2
    python benchmarks/antialias_walk.py --res 128
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import reference as ref  # noqa: E402

ref_aa = sys.modules["reference.antialias"]  # the module (the package re-exports its function under that name)

import glrast as dr  # noqa: E402
from glrast import camera, mesh  # noqa: E402


def blended_pixels(out: torch.Tensor, mask: torch.Tensor) -> int:
    return int((out != mask).any(-1).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 87], help="uv sphere rows (cols = 2 rows)")
    args = p.parse_args(argv)
    glctx = dr.RasterizeGLContext(device="cpu")
    clip = camera.perspective(40.0, 1.0, 0.5, 10.0) @ camera.look_at((0.3, 0.4, 3.2), (0.0, 0.0, 0.0))
    one_triangle = functools.partial(ref_aa._find_silhouette, max_walk=1)
    print(f"{'triangles':>9} {'res':>5} {'covered':>8} {'glrast':>7} {'one-triangle rule':>18} {'s':>6}")
    for rows in args.sizes:
        verts, tri, _ = mesh.uv_sphere(rows, 2 * rows)
        pos = camera.transform(clip, verts).contiguous()
        rast, _ = dr.rasterize(glctx, pos, tri, (args.res, args.res))
        mask = (rast[..., 3:] > 0).float()
        start = time.perf_counter()
        ours = blended_pixels(dr.antialias(mask, rast, pos, tri), mask)
        original = ref_aa._find_silhouette
        ref_aa._find_silhouette = one_triangle
        try:
            theirs = blended_pixels(ref.antialias(mask, rast, pos, tri).float(), mask)
        finally:
            ref_aa._find_silhouette = original
        print(f"{tri.shape[0]:9d} {args.res:4d}² {int(mask.sum()):8d} {ours:7d} {theirs:18d} "
              f"{time.perf_counter() - start:6.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
