"""Timing of texture lookups: 1024^2 lookups into 1k^2 and 4k^2 RGBA textures.

For every filter mode: forward (no autograd) and forward + backward (gradients
to tex and uv, and to uv_da in mipmapped modes), as the median of several calls
after a warm-up, plus the first call of each row (the very first row also
compiles the kernels: the kernel cache starts empty). Mipmapped modes build
the pyramid on every call (a texture being trained); one extra row reuses a
pyramid from texture_construct_mip. torch's grid_sample (bilinear, the same
lookups) is timed alongside as a point of comparison.

The lookups are coherent, like a rendered textured plane: pixel centres mapped
to (s, t) by a rotation and a scale of 1.3 periods across the image, so the
mip level is log2(1.3 * texture size / 1024) (0.4 and 2.4).

    python benchmarks/bench_texture.py            # CPU, and CUDA when available
    python benchmarks/bench_texture.py --quick    # fewer runs
    python benchmarks/bench_texture.py --threads 1  # one CPU thread (steadier on a shared machine)
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

import torch
from _timing import timed
from torch.nn.functional import grid_sample

import glrast as dr

FILTERS = ["nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"]


def lookups(res: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uv [1, res, res, 2] and uv_da [1, res, res, 4] of a rotated, scaled plane."""
    angle, scale = 0.3, 1.3
    c, s = scale * math.cos(angle) / res, scale * math.sin(angle) / res
    ys, xs = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    uv = torch.stack([c * xs - s * ys + 0.1, s * xs + c * ys + 0.1], -1)[None]
    uv_da = torch.tensor([c, -s, s, c]).expand(1, res, res, 4)
    return uv.to(device), uv_da.contiguous().to(device)


def bench_device(device: torch.device, res: int, tex_sizes: list[int], channels: int, runs: int) -> None:
    uv, uv_da = lookups(res, device)
    gen = torch.Generator().manual_seed(0)
    for size in tex_sizes:
        tex = torch.rand(1, size, size, channels, generator=gen).to(device)
        grad_out = torch.randn(1, res, res, channels, generator=gen).to(device)
        tex_g, uv_g, da_g = (x.clone().requires_grad_() for x in (tex, uv, uv_da))
        mip = dr.texture_construct_mip(tex)
        cases = [(f, {"filter_mode": f}) for f in FILTERS]
        cases.append(("linear-mipmap-linear, prebuilt mip", {"filter_mode": "linear-mipmap-linear", "mip": mip}))
        for name, kw in cases:

            def forward(t=tex, u=uv, d=uv_da, kw=kw):
                return dr.texture(t, u, d, **kw)

            def forward_backward(kw=kw, inputs=(tex_g, uv_g, da_g), grad_out=grad_out):
                torch.autograd.grad(forward(*inputs, kw=kw), inputs, grad_out)

            first, fwd_bwd = timed(forward_backward, device, runs)
            with torch.no_grad():
                _, fwd = timed(forward, device, runs)
            row(device, size, channels, name, first, fwd, fwd_bwd, res)

        # grid_sample on the same lookups (it has no wrap mode: the coordinates are wrapped beforehand)
        tex_cf = tex.permute(0, 3, 1, 2).contiguous()
        grid = torch.remainder(uv, 1.0) * 2 - 1
        tex_cf_g, grid_g = tex_cf.clone().requires_grad_(), grid.clone().requires_grad_()
        grad_cf = grad_out.permute(0, 3, 1, 2).contiguous()

        def gs_forward(t=tex_cf, g=grid):
            return grid_sample(t, g, mode="bilinear", padding_mode="zeros", align_corners=False)

        def gs_forward_backward(inputs=(tex_cf_g, grid_g), grad_cf=grad_cf):
            torch.autograd.grad(gs_forward(*inputs), inputs, grad_cf)

        first, fwd_bwd = timed(gs_forward_backward, device, runs)
        with torch.no_grad():
            _, fwd = timed(gs_forward, device, runs)
        row(device, size, channels, "torch grid_sample (bilinear)", first, fwd, fwd_bwd, res)


def row(device, size, channels, name, first, fwd, fwd_bwd, res) -> None:
    rate = res * res / (fwd * 1e-3) / 1e6
    print(
        f"| {device.type} | {size}²×{channels} | {name} | {first:.0f} | {fwd:.1f} | {fwd_bwd:.1f} | {rate:.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed runs instead of --runs")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--res", type=int, default=1024, help="lookups per side (default 1024)")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch's and the kernels')")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the host kernels run on torch's OpenMP runtime too
    runs = 3 if args.quick else args.runs
    # An empty kernel cache, so that the first call shows compilation time.
    os.environ["GLRAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="glrast-bench-cache-")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {runs} timed runs")
    print(f"{args.res}² lookups per call; times in ms; Mlookups/s from the forward time")
    print("| device | texture | filter | first call fwd+bwd | fwd | fwd+bwd | fwd Mlookups/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.devices.split(","):
        bench_device(torch.device(name), args.res, [1024, 4096], args.channels, runs)


if __name__ == "__main__":
    main()
