"""Render one triangle with a colour per vertex: the smallest glrast program.

python examples/triangle.py --out out/triangle
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # examples/_common.py: PNG output shared by the examples
import torch

import glrast as dr


def run(res: int = 256, out: Path | None = None, device: str | None = None, glctx=None,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Render the triangle at res x res; returns {'coverage': fraction of pixels covered, 'time_s': ...}."""
    start = time.perf_counter()
    dev = _common.pick_device(device)
    glctx = glctx or dr.RasterizeGLContext(device=dev)
    # clip-space positions (x, y, z, w): with w = 1 they are normalized device coordinates
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]], device=dev)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=dev)
    col = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], device=dev)

    rast, _ = dr.rasterize(glctx, pos, tri, resolution=(res, res))
    image, _ = dr.interpolate(col, rast, tri)  # [1, res, res, 3]; row 0 is the bottom (clip y = -1)

    if out is not None:
        _common.save_images(Path(out) / "triangle.png", [image[0]])  # flipped upright on the way out
    if display is not None:
        display.hold([image[0]], ["triangle"])  # the viewer shows row 0 at the bottom too
    coverage = float((rast[..., 3] > 0).float().mean())
    return {"coverage": coverage, "time_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="triangle.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("out/triangle"), help="output folder (default out/triangle)")
    p.add_argument("--res", type=_common.positive_int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--display", action="store_true", help="show the image in a window until it is closed")
    args = p.parse_args(argv)
    with _common.LiveDisplay(args.display, "glrast triangle") as display:
        result = run(res=args.res, out=args.out, device=args.device, display=display)
    print(
        f"triangle: {args.res}x{args.res}, coverage {result['coverage']:.3f}, {result['time_s']:.2f} s "
        f"-> {args.out / 'triangle.png'}"
    )
    return result


if __name__ == "__main__":
    main()
