"""Cost of deterministic gradients: each op's backward with and without
torch.use_deterministic_algorithms(True).

Scene: the icosphere (--tris) at --res, colours per vertex, a 512^2 RGB texture looked up
with linear-mipmap-linear at the interpolated (u, v) of a spherical mapping (so the mip
pyramid's gradient is part of texture's backward). Each row times one op's backward alone
(torch.autograd.grad of its output with a fixed random output gradient), as the median of
--runs calls after a warm-up: rasterize (to pos), interpolate (to colours and rast),
texture (to tex and uv), antialias (to colour and pos). Deterministic mode runs each
scatter kernel twice (see glrast/kernels.py).

    python benchmarks/bench_deterministic.py --tris 80k --res 512
    python benchmarks/bench_deterministic.py --modes fast    # the fast path alone (A/B against another checkout)
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import LEVELS, icosphere_scene, timed

import glrast as dr


def backward_cases(device: torch.device, tris: str, res: int) -> dict:
    """op name -> a function running that op's backward once."""
    pos, tri, colors = (t.to(device) for t in icosphere_scene(LEVELS[tris]))
    gen = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 512, 512, 3, generator=gen).to(device)
    glctx = dr.RasterizeGLContext(device=device)
    topo = dr.antialias_construct_topology_hash(tri)
    pos_g, colors_g, tex_g = (t.clone().requires_grad_(True) for t in (pos, colors, tex))
    rast, rast_db = dr.rasterize(glctx, pos_g, tri, (res, res))
    rast_in = rast.detach().requires_grad_(True)
    color, _ = dr.interpolate(colors_g, rast_in, tri)
    uv_attr = (pos[0, :, :2] / pos[0, :, 3:] * 0.5 + 0.5).contiguous()
    uv, uv_da = dr.interpolate(uv_attr, rast.detach(), tri, rast_db.detach(), diff_attrs="all")
    uv = uv.requires_grad_(True)
    textured = dr.texture(tex_g, uv, uv_da, filter_mode="linear-mipmap-linear")
    color_in = color.detach().requires_grad_(True)
    aa = dr.antialias(color_in, rast.detach(), pos_g, tri, topology_hash=topo)

    def grad_of(out: torch.Tensor, inputs: tuple) -> callable:
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device)
        return lambda: torch.autograd.grad(out, inputs, g, retain_graph=True)

    return {
        "rasterize": grad_of(rast, (pos_g,)),
        "interpolate": grad_of(color, (colors_g, rast_in)),
        "texture": grad_of(textured, (tex_g, uv)),
        "antialias": grad_of(aa, (color_in, pos_g)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tris", default="80k", choices=list(LEVELS))
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--modes", default="fast,deterministic")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = backward_cases(device, args.tris, args.res)
    record: dict = {"tris": args.tris, "res": args.res, "threads": torch.get_num_threads(), "device": str(device)}
    print(f"{'op backward':<14}" + "".join(f"{mode:>16}" for mode in args.modes.split(",")) + "   (median ms)")
    for op, run in cases.items():
        row = {}
        for mode in args.modes.split(","):
            torch.use_deterministic_algorithms(mode == "deterministic")
            row[mode] = round(timed(run, device, args.runs)[1], 3)
        torch.use_deterministic_algorithms(False)
        record[op] = row
        print(f"{op:<14}" + "".join(f"{ms:>16.2f}" for ms in row.values()))
    print("RESULT " + json.dumps(record))


if __name__ == "__main__":
    main()
