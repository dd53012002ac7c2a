"""Recover the rotation of a coloured cube from one target image.

The rotation is a unit quaternion, optimized by gradient descent on the image
difference (antialias gives the silhouette its gradients). Starting up to 90
degrees away, a single descent can stall in a local minimum, so each trial
starts a batch of candidates around the initial guess, rendered together in
one call (instanced mode), keeps the one with the lowest loss after a short
while and refines it.

    python examples/pose.py --out out/pose
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import _common  # examples/_common.py: output and options shared by the examples
import torch

import glrast as dr
from glrast import camera, mesh


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w, x, y, z), normalized here, to [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of [..., 4] quaternions (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of the rotation between quaternions a and b ([..., 4]), in float64."""
    a, b = (torch.nn.functional.normalize(x.double(), dim=-1) for x in (a, b))
    rel = quat_mul(a * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64), b)  # conj(a) * b
    return torch.rad2deg(2 * torch.atan2(rel[..., 1:].norm(dim=-1), rel[..., 0].abs()))


def random_quat(gen: torch.Generator, n: int = 1) -> torch.Tensor:
    """[n, 4] uniformly distributed unit quaternions."""
    return torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)


def rotation_by(gen: torch.Generator, degrees: torch.Tensor) -> torch.Tensor:
    """[n, 4] quaternions rotating by the given angles about random axes."""
    axis = torch.nn.functional.normalize(torch.randn(len(degrees), 3, generator=gen), dim=-1)
    half = torch.deg2rad(degrees)[:, None] / 2
    return torch.cat([torch.cos(half), torch.sin(half) * axis], -1)


class Scene:
    """The RGB cube (vertex colour = vertex coordinate bits) seen by a fixed camera."""

    def __init__(self, glctx: dr.RasterizeGLContext, res: int):
        dev = glctx.device
        self.glctx, self.res = glctx, res
        pos, self.tri = mesh.cube(dev)
        self.pos = pos * 0.8
        self.col = 0.15 + 0.7 * (pos + 1) / 2  # eight distinct colours: no rotation maps the cube onto itself
        self.mvp = (camera.perspective(40.0, 1.0, 0.5, 10.0) @ camera.look_at((0.0, 0.0, 4.0), (0.0, 0.0, 0.0))).to(dev)

    def render(self, q: torch.Tensor) -> torch.Tensor:
        """[K, 4] quaternions -> [K, res, res, 3] images (row 0 = bottom)."""
        verts = self.pos @ quat_to_matrix(q).transpose(-1, -2)  # [K, V, 3]
        clip = camera.transform(self.mvp, verts).contiguous()
        rast, _ = dr.rasterize(self.glctx, clip, self.tri, (self.res, self.res))
        color, _ = dr.interpolate(self.col, rast, self.tri)
        return dr.antialias(color, rast, clip, self.tri)


def descend(scene: Scene, target: torch.Tensor, q: torch.Tensor, steps: int, lr: float, log: list[float],
            display: _common.LiveDisplay | None = None):  # fmt: skip
    """`steps` Adam steps on every quaternion of q ([K, 4]) at once; returns (q, final loss per candidate)."""
    q = q.detach().clone().requires_grad_()
    opt = torch.optim.Adam([q], lr=lr)
    for _ in range(steps):
        images = scene.render(q)
        loss_each = ((images - target) ** 2).mean(dim=(1, 2, 3))
        opt.zero_grad()
        loss_each.sum().backward()
        opt.step()
        log.append(float(loss_each.detach().min()))
        if display is not None:
            display.update(target[0], images[loss_each.argmin()], log[-1], "loss (best candidate)")
    return q.detach(), loss_each.detach()


def fit(scene: Scene, target: torch.Tensor, q_init: torch.Tensor, gen: torch.Generator, candidates: int,
        search_steps: int, refine_steps: int, log: list[float], rounds: int = 3, tol: float = 1e-5,
        display: _common.LiveDisplay | None = None) -> torch.Tensor:  # fmt: skip
    """Best quaternion for `target` ([1, H, W, 3]) starting near q_init ([4]).

    A round descends from `candidates` starts around the current estimate (the estimate itself
    among them), keeps the best and refines it. A round that ends above `tol` (image MSE) is
    followed by one with closer starts: that frees the estimate from the local minima where a
    face the target shows edge-on is hidden in the estimate, which no gradient can bring back.
    """
    q = q_init.to(target.device)[None]
    spread = 60.0
    for _ in range(rounds):
        angles = torch.full((candidates,), spread)
        angles[0] = 0.0
        starts = quat_mul(rotation_by(gen, angles).to(q.device), q.expand(candidates, 4))
        q, loss_each = descend(scene, target, starts, search_steps, 0.04, log, display)
        q, loss = descend(scene, target, q[loss_each.argmin()][None], refine_steps, 0.01, log, display)
        if float(loss[0]) < tol:
            break
        spread = 15.0
    return torch.nn.functional.normalize(q[0], dim=-1)


def run(trials: int = 10, res: int = 64, max_angle: float = 90.0, candidates: int = 12, search_steps: int = 60,
        refine_steps: int = 60, out: Path | None = None, device: str | None = None, seed: int = 0,
        glctx: dr.RasterizeGLContext | None = None, quiet: bool = False,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Run `trials` pose recoveries, each from a start rotated by up to `max_angle` degrees
    (uniform) off the target. Returns errors per trial (degrees), the success rate
    (error < 2 degrees), and the time."""
    start = time.perf_counter()
    glctx = glctx or dr.RasterizeGLContext(device=_common.pick_device(device))
    scene = Scene(glctx, res)
    gen = torch.Generator().manual_seed(seed)
    errors, start_angles, logs, pictures = [], [], [], []
    for trial in _common.progress(trials, "pose (trials)", quiet):
        q_target = random_quat(gen)[0]
        offset = rotation_by(gen, torch.rand(1, generator=gen) * max_angle)[0]
        q_init = quat_mul(offset, q_target)
        target = scene.render(q_target[None].to(glctx.device)).detach()
        log: list[float] = []
        q = fit(scene, target, q_init, gen, candidates, search_steps, refine_steps, log, display=display)
        errors.append(float(angle_deg(q.cpu(), q_target)))
        start_angles.append(float(angle_deg(q_init, q_target)))
        logs.append(log)
        if trial < 4:
            with torch.no_grad():
                pictures.append([target[0], scene.render(q_init[None].to(glctx.device))[0], scene.render(q[None])[0]])
    success = sum(e < 2.0 for e in errors) / trials
    if out is not None:
        out = Path(out)
        for k, images in enumerate(pictures):
            _common.save_images(out / f"trial{k}_target_start_result.png", images, scale=max(1, 256 // res))
        _common.save_plot(out / "loss.png", {f"trial {k}": log for k, log in enumerate(logs)}, "image MSE (best)")
    return {
        "errors_deg": errors,
        "start_deg": start_angles,
        "success_rate": success,
        "median_error_deg": float(torch.tensor(errors).median()),
        "time_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("pose", __doc__, steps=120, res=64)
    p.add_argument("--trials", type=_common.positive_int, default=10, help="number of pose recoveries (default 10)")
    p.add_argument("--max-angle", type=float, default=90.0, help="largest start error in degrees (default 90)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2 (half search, half refinement), got {args.steps}")
    search = max(1, args.steps // 2)
    with _common.LiveDisplay(args.display, "glrast pose") as display:
        result = run(trials=args.trials, res=args.res, max_angle=args.max_angle, search_steps=search,
                     refine_steps=args.steps - search, out=args.out, device=args.device, seed=args.seed,
                     display=display)  # fmt: skip
    print(
        f"pose: {math.floor(100 * result['success_rate'] + 0.5)}% of {args.trials} trials within 2 deg "
        f"(median error {result['median_error_deg']:.2f} deg, starts up to {args.max_angle:.0f} deg away), "
        f"{result['time_s']:.1f} s"
    )
    return result


if __name__ == "__main__":
    main()
