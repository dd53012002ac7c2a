"""Fit the vertex positions and colours of a cube to reference renders.

The loss compares tiny images (16x16 by default): most of the signal is in the
cube's silhouette, whose gradients come from antialias. Each step renders a few
random views of the reference cube and of the estimate, and Adam moves the
estimate's eight vertices and their colours.

    python examples/cube.py --out out/cube
"""

from __future__ import annotations

import time
from pathlib import Path

import _common  # examples/_common.py: output and options shared by the examples
import torch

import glrast as dr
from glrast import camera, mesh


def random_rotations(gen: torch.Generator, n: int) -> torch.Tensor:
    """[n, 4, 4] uniformly distributed rotations (QR of Gaussian matrices, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = q * torch.linalg.det(q)[:, None, None]  # proper rotations only
    m = torch.eye(4).repeat(n, 1, 1)
    m[:, :3, :3] = q
    return m


class Renderer:
    def __init__(self, glctx: dr.RasterizeGLContext, tri: torch.Tensor):
        self.glctx, self.tri = glctx, tri
        self.proj_view = camera.perspective(30.0, 1.0, 1.0, 20.0) @ camera.look_at((0.0, 0.0, 7.0), (0.0, 0.0, 0.0))

    def __call__(self, pos: torch.Tensor, col: torch.Tensor, models: torch.Tensor, res: int) -> torch.Tensor:
        """pos [V, 3], col [V, 3], models [N, 4, 4] -> [N, res, res, 3] antialiased images."""
        mvp = (self.proj_view @ models).to(pos.device)
        clip = camera.transform(mvp, pos).contiguous()
        rast, _ = dr.rasterize(self.glctx, clip, self.tri, (res, res))
        color, _ = dr.interpolate(col[None], rast, self.tri)
        return dr.antialias(color, rast, clip, self.tri)


def run(steps: int = 1000, res: int = 16, batch: int = 4, noise: float = 0.5, lr: float = 0.03, display_res: int = 256,
        out: Path | None = None, device: str | None = None, seed: int = 0,
        glctx: dr.RasterizeGLContext | None = None, quiet: bool = False,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Fit the cube from a start whose vertices are displaced by uniform noise in [-noise, noise].

    Returns the vertex-position RMSE at the start and at the end, the colour RMSE, the final
    image loss and the time.
    """
    start = time.perf_counter()
    dev = _common.pick_device(device)
    glctx = glctx or dr.RasterizeGLContext(device=dev)
    gen = torch.Generator().manual_seed(seed)
    pos_ref, tri = mesh.cube()
    col_ref = torch.rand(8, 3, generator=gen)
    pos_opt = pos_ref + noise * (2 * torch.rand(8, 3, generator=gen) - 1)
    col_opt = torch.rand(8, 3, generator=gen)
    pos_ref, col_ref, tri = pos_ref.to(dev), col_ref.to(dev), tri.to(dev)
    pos_opt = pos_opt.to(dev).requires_grad_()
    col_opt = col_opt.to(dev).requires_grad_()
    pos_start, col_start = pos_opt.detach().clone(), col_opt.detach().clone()
    render = Renderer(glctx, tri)

    def pos_rmse() -> float:
        return float(((pos_opt.detach() - pos_ref) ** 2).mean().sqrt())

    rmse_start = pos_rmse()
    opt = torch.optim.Adam([pos_opt, col_opt], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 100 ** (-k / steps))  # decay to 1/100 at the end
    losses, rmses = [], []
    for _ in _common.progress(steps, "cube", quiet):
        models = random_rotations(gen, batch)
        with torch.no_grad():
            target = render(pos_ref, col_ref, models, res)
        image = render(pos_opt, col_opt, models, res)
        loss = ((image - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        rmses.append(pos_rmse())
        if display is not None:
            display.update(target[0], image[0], losses[-1])

    result = {
        "pos_rmse_start": rmse_start,
        "pos_rmse": rmses[-1],
        "col_rmse": float(((col_opt.detach() - col_ref) ** 2).mean().sqrt()),
        "loss": sum(losses[-20:]) / len(losses[-20:]),
        "time_s": time.perf_counter() - start,
    }
    if out is not None:
        out = Path(out)
        views = random_rotations(torch.Generator().manual_seed(seed + 1), 3)
        with torch.no_grad():
            for k in range(3):
                m = views[k : k + 1]
                meshes = [(pos_ref, col_ref), (pos_start, col_start), (pos_opt, col_opt)]
                images = [render(p, c, m, display_res)[0] for p, c in meshes]
                small = [render(p, c, m, res)[0] for p, c in meshes]
                _common.save_images(out / f"view{k}_target_start_result.png", images)
                _common.save_images(out / f"view{k}_target_start_result_{res}px.png", small, scale=display_res // res)
        _common.save_plot(out / "loss.png", {"image MSE": losses, "vertex RMSE": rmses}, "loss / error")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("cube", __doc__, steps=1000, res=16)
    p.add_argument("--batch", type=_common.positive_int, default=4, help="views per step (default 4)")
    p.add_argument("--noise", type=float, default=0.5, help="start: vertex displacement amplitude (default 0.5)")
    args = p.parse_args(argv)
    with _common.LiveDisplay(args.display, "glrast cube") as display:
        r = run(steps=args.steps, res=args.res, batch=args.batch, noise=args.noise, out=args.out,
                device=args.device, seed=args.seed, display=display)  # fmt: skip
    print(
        f"cube: vertex RMSE {r['pos_rmse_start']:.3f} -> {r['pos_rmse']:.2e} "
        f"({r['pos_rmse_start'] / r['pos_rmse']:.3g}x lower), colour RMSE {r['col_rmse']:.2e}, "
        f"loss at {args.res}x{args.res} {r['loss']:.2e}, {r['time_s']:.1f} s"
    )
    return r


if __name__ == "__main__":
    main()
