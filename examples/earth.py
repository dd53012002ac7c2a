"""Learn the texture of a planet from reference renders, with and without mipmaps.

A procedural planet (continents from smooth noise, oceans, ice caps; no download)
is rendered from a fixed set of training views at low resolution, with
trilinear mipmapped filtering. The texture has many texels per pixel there.
Two runs then learn the texture from those renders, from the same start:

* with mipmaps: each pixel reads the pyramid level that fits its footprint, and
  the gradient spreads over every texel under that footprint;
* without: each pixel reads the four texels nearest to its centre, so most
  texels get no gradient from any one view and views not seen in training show
  the untrained ones.

Both are scored on held-out views at the training resolution.

    python examples/earth.py --out out/earth
"""

from __future__ import annotations

import time
from pathlib import Path

import _common  # examples/_common.py: output and options shared by the examples
import torch

import glrast as dr
from glrast import camera, mesh


def planet_texture(height: int, gen: torch.Generator) -> torch.Tensor:
    """Equirectangular colour map [height, 2 height, 3] in [0, 1]; row 0 is the south pole (t = 0).

    The elevation is a sum of random plane waves over the unit sphere (evaluated at the
    texel's direction, so nothing breaks at the seam or the poles), finer octaves weaker.
    """
    width = 2 * height
    t = (torch.arange(height) + 0.5) / height
    s = (torch.arange(width) + 0.5) / width
    polar, azimuth = torch.pi * (1 - t)[:, None], 2 * torch.pi * s[None, :]
    d = torch.stack(
        [torch.sin(polar) * torch.sin(azimuth), torch.cos(polar).expand(height, width),
         torch.sin(polar) * torch.cos(azimuth)], -1,
    )  # fmt: skip
    elevation = torch.zeros(height, width)
    for octave in range(7):
        waves = torch.nn.functional.normalize(torch.randn(12, 3, generator=gen), dim=-1)
        phase = 2 * torch.pi * torch.rand(12, generator=gen)
        freq = 2.0 * 2.0**octave
        elevation += 0.6**octave * torch.sin(freq * d @ waves.T + phase).sum(-1) / 12**0.5
    e = (elevation - elevation.mean()) / elevation.std()
    land = e > 0.25
    ocean = torch.stack([0.02 + 0.06 * (e + 3) / 3.25, 0.10 + 0.15 * (e + 3) / 3.25, 0.35 + 0.25 * (e + 3) / 3.25], -1)
    h = ((e - 0.25) / 2).clamp(0, 1)[..., None]
    low, high = torch.tensor([0.20, 0.50, 0.15]), torch.tensor([0.55, 0.42, 0.25])
    ground = low + (high - low) * h.sqrt() + 0.4 * (h - 0.6).clamp(min=0)  # green coasts, brown and snowy peaks
    color = torch.where(land[..., None], ground, ocean.clamp(0, 1))
    ice = (d[..., 1].abs() + 0.04 * elevation) > 0.95
    return torch.where(ice[..., None], torch.tensor([0.92, 0.94, 0.97]), color).clamp(0, 1)


def view_matrices(gen: torch.Generator, n: int) -> torch.Tensor:
    """[n, 4, 4] cameras on random directions around the planet, at random distances."""
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    dist = 2.6 + 1.2 * torch.rand(n, 1, generator=gen)
    up = torch.tensor([0.0, 1.0, 0.0]).expand(n, 3)
    return camera.perspective(40.0, 1.0, 0.5, 10.0) @ camera.look_at(direction * dist, torch.zeros(n, 3), up)


class Planet:
    def __init__(self, glctx: dr.RasterizeGLContext):
        dev = glctx.device
        self.glctx = glctx
        pos, self.tri, self.uv = mesh.uv_sphere(48, 96, dev)
        self.pos = pos

    def render(self, tex: torch.Tensor, mvp: torch.Tensor, res: int, mip: bool) -> torch.Tensor:
        """tex [h, w, 3], mvp [N, 4, 4] -> [N, res, res, 3]; black background."""
        clip = camera.transform(mvp.to(self.pos.device), self.pos).contiguous()
        rast, rast_db = dr.rasterize(self.glctx, clip, self.tri, (res, res))
        if mip:
            uv, uv_da = dr.interpolate(self.uv, rast, self.tri, rast_db=rast_db, diff_attrs="all")
            color = dr.texture(tex[None], uv, uv_da, filter_mode="linear-mipmap-linear", boundary_mode="wrap")
        else:
            uv, _ = dr.interpolate(self.uv, rast, self.tri)
            color = dr.texture(tex[None], uv, filter_mode="linear", boundary_mode="wrap")
        return color * (rast[..., 3:] > 0)


def train(planet: Planet, targets: torch.Tensor, views: torch.Tensor, init: torch.Tensor, mip: bool, steps: int,
          batch: int, res: int, gen: torch.Generator, quiet: bool,
          display: _common.LiveDisplay | None = None) -> tuple[torch.Tensor, list[float]]:  # fmt: skip
    tex = init.clone().requires_grad_()
    opt = torch.optim.Adam([tex], lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 10 ** (-k / steps))
    losses = []
    for _ in _common.progress(steps, "earth, mipmaps" if mip else "earth, no mipmaps", quiet):
        pick = torch.randint(len(views), (batch,), generator=gen)
        image = planet.render(tex, views[pick], res, mip)
        loss = ((image - targets[pick.to(targets.device)]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            tex.clamp_(0, 1)
        losses.append(float(loss.detach()))
        if display is not None:
            display.update(targets[pick[0].to(targets.device)], image[0], losses[-1],
                           "loss, mipmaps" if mip else "loss, no mipmaps")  # fmt: skip
    return tex.detach(), losses


def run(steps: int = 400, res: int = 64, tex_res: int = 512, train_views: int = 32, test_views: int = 8,
        batch: int = 4, out: Path | None = None, device: str | None = None, seed: int = 0,
        glctx: dr.RasterizeGLContext | None = None, quiet: bool = False,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Learn a [tex_res, 2 tex_res] texture twice (with / without mipmaps) from `train_views`
    reference renders at res x res; returns the held-out PSNR of both runs and the time."""
    start = time.perf_counter()
    dev = _common.pick_device(device)
    glctx = glctx or dr.RasterizeGLContext(device=dev)
    gen = torch.Generator().manual_seed(seed)
    planet = Planet(glctx)
    tex_ref = planet_texture(tex_res, gen).to(dev)
    views = view_matrices(gen, train_views + test_views)
    train_v, test_v = views[:train_views], views[train_views:]
    with torch.no_grad():
        targets = planet.render(tex_ref, train_v, res, mip=True)
        test_targets = planet.render(tex_ref, test_v, res, mip=True)
    init = torch.full_like(tex_ref, 0.5)
    result: dict = {}
    curves, learned = {}, {}
    for mip in (True, False):
        key = "mip" if mip else "nomip"
        tex, losses = train(planet, targets, train_v, init, mip, steps, batch, res, gen, quiet, display)
        with torch.no_grad():
            test_images = planet.render(tex, test_v, res, mip)
        result[f"psnr_{key}"] = _common.psnr(test_images, test_targets)
        curves["mipmaps" if mip else "no mipmaps"] = losses
        learned[key] = (tex, test_images)
    result["psnr_gain_db"] = result["psnr_mip"] - result["psnr_nomip"]
    result["time_s"] = time.perf_counter() - start
    if out is not None:
        out = Path(out)
        scale = max(1, 256 // res)
        for k in range(min(3, test_views)):
            images = [test_targets[k], learned["mip"][1][k], learned["nomip"][1][k]]
            _common.save_images(out / f"heldout{k}_target_mip_nomip.png", images, scale=scale)
        texes = [tex_ref, learned["mip"][0], learned["nomip"][0]]
        _common.save_images(out / "texture_reference_mip_nomip.png", texes)
        _common.save_plot(out / "loss.png", curves, "training image MSE")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("earth", __doc__, steps=400, res=64)
    p.add_argument(
        "--tex-res", type=_common.positive_int, default=512, help="texture height (width is twice that; default 512)"
    )
    p.add_argument(
        "--train-views", type=_common.positive_int, default=32, help="reference renders to learn from (default 32)"
    )
    args = p.parse_args(argv)
    with _common.LiveDisplay(args.display, "glrast earth") as display:
        r = run(steps=args.steps, res=args.res, tex_res=args.tex_res, train_views=args.train_views, out=args.out,
                device=args.device, seed=args.seed, display=display)  # fmt: skip
    print(
        f"earth: held-out PSNR {r['psnr_mip']:.2f} dB with mipmaps, {r['psnr_nomip']:.2f} dB without "
        f"({r['psnr_gain_db']:+.2f} dB), {r['time_s']:.1f} s"
    )
    return r


if __name__ == "__main__":
    main()
