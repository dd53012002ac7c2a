"""Learn an environment map and Phong parameters from renders of a reflective object.

The object is an irregular blob (an icosphere with a procedural radial
displacement); its colour at a pixel is the environment (a cube map) seen in
the mirror direction, plus the diffuse and specular terms of one directional
light in the Blinn-Phong model:

    colour = env(r) + kd * max(n.l, 0) + ks * max(n.h, 0) ^ shininess

with n the interpolated normal, v the direction to the eye, r = v reflected
about n, l the light direction and h = normalize(l + v). (The original Phong
highlight max(r.l, 0) ^ shininess depends on r alone and would be absorbed into
the environment map; the half-vector form is not, so its parameters can be
recovered.) From reference renders of a procedural environment, the
example learns the cube map, kd, ks and the shininess, and scores held-out views.

    python examples/envphong.py --out out/envphong
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import _common  # examples/_common.py: output and options shared by the examples
import torch

import glrast as dr
from glrast import camera, mesh

LIGHT = torch.nn.functional.normalize(torch.tensor([0.6, 0.8, 0.3]), dim=0)
TRUE_PHONG = {"kd": [0.25, 0.12, 0.08], "ks": [0.8, 0.75, 0.6], "shininess": 40.0}


def cube_directions(size: int) -> torch.Tensor:
    """[6, size, size, 3] unit directions of the texel centres of a cube map (OpenGL face order and orientation)."""
    c = (torch.arange(size) + 0.5) / size * 2 - 1
    tc, sc = torch.meshgrid(c, c, indexing="ij")  # rows follow t, columns s
    one = torch.ones_like(sc)
    faces = [
        torch.stack([one, -tc, -sc], -1),  # +X: sc = -z, tc = -y
        torch.stack([-one, -tc, sc], -1),  # -X: sc = +z, tc = -y
        torch.stack([sc, one, tc], -1),  # +Y: sc = +x, tc = +z
        torch.stack([sc, -one, -tc], -1),  # -Y: sc = +x, tc = -z
        torch.stack([sc, -tc, one], -1),  # +Z: sc = +x, tc = -y
        torch.stack([-sc, -tc, -one], -1),  # -Z: sc = -x, tc = -y
    ]
    return torch.nn.functional.normalize(torch.stack(faces), dim=-1)


def environment(size: int) -> torch.Tensor:
    """Procedural surroundings as a cube map [6, size, size, 3]: a sky over a ground, a bright horizon,
    two coloured lamps and vertical stripes (walls) around."""
    d = cube_directions(size)
    x, y, z = d.unbind(-1)
    sky = torch.tensor([0.25, 0.45, 0.85]) + 0.4 * y.clamp(min=0)[..., None] * torch.tensor([-0.1, 0.1, 0.1])
    ground = torch.tensor([0.35, 0.27, 0.18]) * (0.6 + 0.4 * torch.cos(6 * torch.atan2(x, z)))[..., None]
    color = torch.where((y > 0)[..., None], sky, ground)
    color = color + 0.5 * torch.exp(-((y / 0.08) ** 2))[..., None]  # horizon glow
    for direction, rgb in (([-0.5, 0.4, 0.7], [1.0, 0.6, 0.2]), ([0.7, 0.1, -0.6], [0.3, 1.0, 0.5])):
        dot = (d * torch.nn.functional.normalize(torch.tensor(direction), dim=0)).sum(-1)
        color = color + torch.tensor(rgb) * torch.exp((dot - 1) / 0.02)[..., None]
    stripes = 0.5 + 0.5 * torch.cos(8 * torch.atan2(x, z))
    color = color * (1 - 0.3 * (stripes * (y.abs() < 0.35))[..., None])
    return color.clamp(0, 1)


def blob(level: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An icosphere displaced along its radius by a few random smooth waves: pos [V, 3], tri [T, 3]."""
    pos, tri = mesh.icosphere(level)
    waves = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen), dim=-1)
    freq = 1.5 + 2.5 * torch.rand(6, generator=gen)
    phase = 2 * torch.pi * torch.rand(6, generator=gen)
    radius = 1 + 0.12 * torch.sin(freq * (pos @ waves.T) + phase).sum(-1) / 6**0.5
    return pos * radius[:, None], tri


def cameras(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random views around the blob: (mvp [n, 4, 4], eye [n, 3])."""
    eye = 3.2 * torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).expand(n, 3)
    mvp = camera.perspective(45.0, 1.0, 0.5, 10.0) @ camera.look_at(eye, torch.zeros(n, 3), up)
    return mvp, eye


class Scene:
    def __init__(self, glctx: dr.RasterizeGLContext, gen: torch.Generator, level: int):
        dev = glctx.device
        self.glctx = glctx
        pos, tri = blob(level, gen)
        self.pos, self.tri = pos.to(dev), tri.to(dev)
        self.normals = mesh.vertex_normals(self.pos, self.tri)
        self.light = LIGHT.to(dev)

    def render(self, env: torch.Tensor, phong: dict, mvp: torch.Tensor, eye: torch.Tensor, res: int) -> torch.Tensor:
        """env [6, s, s, 3], phong {'kd': [3], 'ks': [3], 'shininess': []}, mvp [N, 4, 4], eye [N, 3]
        -> [N, res, res, 3] (black background)."""
        dev = self.pos.device
        clip = camera.transform(mvp.to(dev), self.pos).contiguous()
        rast, _ = dr.rasterize(self.glctx, clip, self.tri, (res, res))
        attrs, _ = dr.interpolate(torch.cat([self.pos, self.normals], -1), rast, self.tri)
        point, n = attrs[..., :3], torch.nn.functional.normalize(attrs[..., 3:], dim=-1)
        view = torch.nn.functional.normalize(eye.to(dev)[:, None, None, :] - point, dim=-1)
        r = 2 * (n * view).sum(-1, keepdim=True) * n - view  # mirror direction
        mask = rast[..., 3:] > 0
        r = torch.where(mask, r, torch.ones_like(r))  # a valid direction for empty pixels too
        reflected = dr.texture(env[None], r.contiguous(), filter_mode="linear", boundary_mode="cube")
        diffuse = (n * self.light).sum(-1, keepdim=True).clamp(min=0)
        half = torch.nn.functional.normalize(view + self.light, dim=-1)
        specular = (n * half).sum(-1, keepdim=True).clamp(min=1e-6) ** phong["shininess"]
        color = reflected + phong["kd"] * diffuse + phong["ks"] * specular
        return torch.where(mask, color, torch.zeros_like(color))


def run(steps: int = 1500, res: int = 64, env_res: int = 32, train_views: int = 64, test_views: int = 8,
        batch: int = 4, level: int = 4, out: Path | None = None, device: str | None = None, seed: int = 0,
        glctx: dr.RasterizeGLContext | None = None, quiet: bool = False,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Learn the cube map and the Phong parameters; returns the held-out PSNR, the learned
    parameters and the time."""
    start = time.perf_counter()
    dev = _common.pick_device(device)
    glctx = glctx or dr.RasterizeGLContext(device=dev)
    gen = torch.Generator().manual_seed(seed)
    scene = Scene(glctx, gen, level)
    env_ref = environment(2 * env_res).to(dev)  # finer than what is learned: no exact fit exists
    phong_ref = {k: torch.tensor(v, device=dev) for k, v in TRUE_PHONG.items()}
    mvp, eye = cameras(gen, train_views + test_views)
    with torch.no_grad():
        targets = scene.render(env_ref, phong_ref, mvp[:train_views], eye[:train_views], res)
        test_targets = scene.render(env_ref, phong_ref, mvp[train_views:], eye[train_views:], res)

    env = torch.full((6, env_res, env_res, 3), 0.5, device=dev, requires_grad=True)
    kd = torch.full((3,), 0.5, device=dev, requires_grad=True)
    ks = torch.full((3,), 0.5, device=dev, requires_grad=True)
    log_shininess = torch.tensor(math.log(10.0), device=dev, requires_grad=True)
    opt = torch.optim.Adam([{"params": [env], "lr": 0.03}, {"params": [kd, ks, log_shininess], "lr": 0.1}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 10 ** (-k / steps))

    def phong() -> dict:
        return {"kd": kd, "ks": ks, "shininess": log_shininess.exp()}

    losses = []
    for _ in _common.progress(steps, "envphong", quiet):
        pick = torch.randint(train_views, (batch,), generator=gen)
        image = scene.render(env, phong(), mvp[pick], eye[pick], res)
        loss = ((image - targets[pick.to(dev)]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if display is not None:
            display.update(targets[pick[0].to(dev)].clamp(0, 1), image[0].clamp(0, 1), losses[-1])

    with torch.no_grad():
        test_images = scene.render(env, phong(), mvp[train_views:], eye[train_views:], res)
        learned = {k: v.detach().cpu().tolist() for k, v in phong().items()}
        result = {
            "psnr": _common.psnr(test_images.clamp(0, 1), test_targets.clamp(0, 1)),
            "phong": learned,
            "time_s": time.perf_counter() - start,
        }
        if out is not None:
            out = Path(out)
            scale = max(1, 256 // res)
            for k in range(min(3, test_views)):
                _common.save_images(out / f"heldout{k}_target_result.png", [test_targets[k], test_images[k]], scale)
            # the six faces side by side, +X -X +Y -Y +Z -Z; a face's row 0 is its top (t = 0), and
            # save_images expects the bottom row first
            faces = [torch.cat(list(e.flip(1)), dim=1) for e in (env_ref, env.detach().clamp(0, 1))]
            _common.save_images(out / "envmap_reference.png", [faces[0]], scale=2)  # 2x finer than learned
            _common.save_images(out / "envmap_learned.png", [faces[1]], scale=4)
            _common.save_plot(out / "loss.png", {"image MSE": losses}, "training image MSE")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("envphong", __doc__, steps=1500, res=64)
    p.add_argument("--env-res", type=_common.positive_int, default=32, help="cube map face size in texels (default 32)")
    args = p.parse_args(argv)
    with _common.LiveDisplay(args.display, "glrast envphong") as display:
        r = run(steps=args.steps, res=args.res, env_res=args.env_res, out=args.out, device=args.device,
                seed=args.seed, display=display)  # fmt: skip
    ph = r["phong"]
    print(
        f"envphong: held-out PSNR {r['psnr']:.2f} dB; shininess {ph['shininess']:.1f} "
        f"(true {TRUE_PHONG['shininess']:.0f}), ks {[round(v, 2) for v in ph['ks']]} "
        f"(true {TRUE_PHONG['ks']}), {r['time_s']:.1f} s"
    )
    return r


if __name__ == "__main__":
    main()
