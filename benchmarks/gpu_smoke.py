"""GPU smoke test: every op glrast has, forward and backward, on CUDA against the CPU build.

Renders a sphere from two views, then runs every op (rasterize, the second
depth-peeled layer, interpolate, texture with a mipmapped 2D texture and with a
cube map, antialias) forward and backward on CUDA and on the CPU with the same
inputs, and prints per op the largest differences of outputs and gradients and
the time of forward+backward on both devices. The ops after the GL ones all take
the CPU's rasterization as input, so they compare the two kernel builds on
identical data (exit status 1 above a relative difference of 1e-3); rasterize
and depth peeling are compared where both GL drivers agree on the covering
triangle.

    python benchmarks/gpu_smoke.py                  # 512x512, 2 views
    python benchmarks/gpu_smoke.py --res 1024 --runs 20

On a machine without CUDA it says so and exits 0; `--device cpu` runs the
whole comparison CPU against CPU (to check the script itself).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from _timing import timed

import glrast as dr
from glrast import camera, mesh

# An op: (inputs on a device) -> (outputs, leaves that receive gradients).
Op = Callable[[dict[str, torch.Tensor]], tuple[list[torch.Tensor], list[torch.Tensor]]]
GL_OPS = ("rasterize", "depth peeling, layer 2")


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """CPU inputs: sphere geometry in clip space for 2 views, attributes, a texture, a cube map."""
    g = torch.Generator().manual_seed(seed)
    verts, tri, uv = mesh.uv_sphere(48, 96)
    proj = camera.perspective(45.0, 1.0, 0.1, 10.0)
    views = [camera.look_at(eye, (0.0, 0.0, 0.0)) for eye in ((0.0, 0.5, 3.0), (2.2, -0.4, 2.0))]
    pos = torch.cat([camera.transform(proj @ v, verts) for v in views])
    return {
        "pos": pos.contiguous(),
        "tri": tri,
        "uv": uv[None].expand(2, -1, -1).contiguous(),
        "color": torch.rand(2, verts.shape[0], 3, generator=g),
        "tex": torch.rand(1, 256, 256, 3, generator=g),
        "dirs": verts.contiguous(),  # cube-map lookup directions: the unit sphere's normals
        "cube": torch.rand(1, 6, 64, 64, 3, generator=g),
    }


def add_rasterization(inputs: dict[str, torch.Tensor], glctx: dr.RasterizeGLContext, res: int) -> None:
    """rast, rast_db (and shaded colour) computed once on the CPU, shared by both devices."""
    rast, rast_db = dr.rasterize(glctx, inputs["pos"], inputs["tri"], (res, res))
    inputs["rast"], inputs["rast_db"] = rast, rast_db
    inputs["shaded"], _ = dr.interpolate(inputs["color"], rast, inputs["tri"])


def op_rasterize(glctx: dr.RasterizeGLContext, res: int) -> Op:
    def run(x):
        pos = x["pos"].requires_grad_()
        rast, rast_db = dr.rasterize(glctx, pos, x["tri"], (res, res))
        return [rast, rast_db], [pos]

    return run


def op_peel(glctx: dr.RasterizeGLContext, res: int) -> Op:
    """The second layer of depth peeling (the sphere's far side)."""

    def run(x):
        pos = x["pos"].requires_grad_()
        with dr.DepthPeeler(glctx, pos, x["tri"], (res, res)) as peeler:
            peeler.rasterize_next_layer()
            rast, rast_db = peeler.rasterize_next_layer()
        return [rast, rast_db], [pos]

    return run


def op_interpolate(x):
    attr, rast, rast_db = (x[k].requires_grad_() for k in ("uv", "rast", "rast_db"))
    out, out_da = dr.interpolate(attr, rast, x["tri"], rast_db=rast_db, diff_attrs="all")
    return [out, out_da], [attr, rast, rast_db]


def op_texture(x):
    uv, uv_da = dr.interpolate(x["uv"], x["rast"], x["tri"], rast_db=x["rast_db"], diff_attrs="all")
    tex, uv, uv_da = (t.detach().requires_grad_() for t in (x["tex"], uv, uv_da))
    out = dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear", boundary_mode="wrap")
    return [out], [tex, uv, uv_da]


def op_texture_cube(x):
    d, d_da = dr.interpolate(x["dirs"], x["rast"], x["tri"], rast_db=x["rast_db"], diff_attrs="all")
    cube, d, d_da = (t.detach().requires_grad_() for t in (x["cube"], d, d_da))
    out = dr.texture(cube, d, d_da, filter_mode="linear-mipmap-linear", boundary_mode="cube")
    return [out], [cube, d, d_da]


def op_antialias(x):
    color, pos = x["shaded"].requires_grad_(), x["pos"].requires_grad_()
    out = dr.antialias(color, x["rast"], pos, x["tri"])
    return [out], [color, pos]


def forward_backward(op: Op, inputs: dict[str, torch.Tensor], device: torch.device):
    """Outputs and gradients of a fixed random projection of the outputs, all moved to the CPU."""
    x = {k: v.detach().to(device).clone() for k, v in inputs.items()}
    outputs, leaves = op(x)
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g).to(device)).sum() for o in outputs if o.numel())
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    as_cpu = [t.detach().cpu() for t in outputs]
    return as_cpu, [None if t is None else t.cpu() for t in grads]


def timed_op(op: Op, inputs: dict[str, torch.Tensor], device: torch.device, runs: int) -> float:
    """Median milliseconds of forward+backward over `runs` calls (after two untimed ones)."""
    x = {k: v.detach().to(device) for k, v in inputs.items()}

    def once():
        outputs, leaves = op({k: v.clone() for k, v in x.items()})
        loss = sum(o.sum() for o in outputs if o.numel() and o.dtype.is_floating_point)
        torch.autograd.grad(loss, leaves, allow_unused=True)

    return timed(once, device, runs)[1]


def max_diff(a: torch.Tensor | None, b: torch.Tensor | None, mask: torch.Tensor | None = None) -> tuple[float, float]:
    """(largest absolute difference, the same relative to b's largest magnitude)."""
    if a is None or b is None or a.numel() == 0:
        return 0.0, 0.0
    if mask is not None:
        a, b = a[mask], b[mask]
    if a.numel() == 0:
        return 0.0, 0.0
    d = float((a - b).abs().max())
    return d, d / max(float(b.abs().max()), 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=512, help="image height and width in pixels")
    parser.add_argument("--runs", type=int, default=10, help="timed forward+backward calls per op and device")
    parser.add_argument("--device", default="cuda", help="device compared against the CPU (default cuda)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"CUDA is not available (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
            "nothing to compare. `glrast doctor` shows what is missing."
        )
        return 0
    cpu = torch.device("cpu")
    cpu_ctx = dr.RasterizeGLContext(device=cpu)
    dev_ctx = dr.RasterizeGLContext(device=device)
    print(f"{device}: {dev_ctx.info['renderer']} | cpu: {cpu_ctx.info['renderer']}, {torch.get_num_threads()} threads")
    inputs = make_inputs()
    add_rasterization(inputs, cpu_ctx, args.res)
    ops: dict[str, tuple[Op, Op]] = {
        "rasterize": (op_rasterize(cpu_ctx, args.res), op_rasterize(dev_ctx, args.res)),
        "depth peeling, layer 2": (op_peel(cpu_ctx, args.res), op_peel(dev_ctx, args.res)),
    }
    for name, op in (
        ("interpolate", op_interpolate),
        ("texture", op_texture),
        ("texture (cube)", op_texture_cube),
        ("antialias", op_antialias),
    ):
        ops[name] = (op, op)
    print(f"{inputs['pos'].shape[0]} views of {inputs['tri'].shape[0]:,} triangles at {args.res}x{args.res}")
    print(f"| op | max out diff (rel.) | max grad diff (rel.) | cpu fwd+bwd (ms) | {device} fwd+bwd (ms) |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0  # largest relative difference of an op that sees identical inputs on both devices
    for name, (op_cpu, op_dev) in ops.items():
        out_c, grad_c = forward_backward(op_cpu, inputs, cpu)
        out_d, grad_d = forward_backward(op_dev, inputs, device)
        # GL ops: compare where both GL drivers chose the same triangle (edge ties may differ).
        gl_op = name in GL_OPS
        mask = (out_c[0][..., 3] == out_d[0][..., 3]) if gl_op else None
        out_err = max(max_diff(a, b, mask) for a, b in zip(out_c, out_d))
        grad_err = max(max_diff(a, b) for a, b in zip(grad_c, grad_d))
        note = f" (same triangle at {float(mask.float().mean()):.2%} of pixels)" if mask is not None else ""
        t_cpu, t_dev = timed_op(op_cpu, inputs, cpu, args.runs), timed_op(op_dev, inputs, device, args.runs)
        print(
            f"| {name}{note} | {out_err[0]:.3g} ({out_err[1]:.1e}) | {grad_err[0]:.3g} ({grad_err[1]:.1e}) "
            f"| {t_cpu:.1f} | {t_dev:.2f} |",
            flush=True,
        )
        if not gl_op:  # their gradients follow each driver's own coverage
            worst = max(worst, out_err[1], grad_err[1])
    dev_ctx.release()
    cpu_ctx.release()
    if worst > 1e-3:
        print(f"FAILED: {device} and cpu differ by up to {worst:.1e} (relative) on identical inputs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
