"""Images of a mesh for the tools (`glrast render`, `glrast view`): rasterize, interpolate,
then one of several shadings, then antialias. Not part of the differentiable API."""

from __future__ import annotations

from typing import Any

import torch

MODES = ("shaded", "normals", "depth", "ids", "uv", "wireframe")


def mip_levels(height: int, width: int) -> int:
    """How many times a texture of this size can be halved under glrast's mip rule (no odd side above 1)."""
    levels = 0
    while (height > 1 or width > 1) and not ((height > 1 and height % 2) or (width > 1 and width % 2)):
        height, width, levels = max(1, height // 2), max(1, width // 2), levels + 1
    return levels


def unit_sphere_transform(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """([4, 4] matrix taking `pos` [V, 3] into the unit sphere around its bounding-box centre,
    the centre [3], the radius), all on the CPU."""
    lo, hi = pos.min(0).values.cpu(), pos.max(0).values.cpu()
    centre = (lo + hi) / 2
    radius = float((pos.cpu() - centre).norm(dim=1).max()) or 1.0
    to_unit = torch.eye(4)
    to_unit[:3, :3] /= radius
    to_unit[:3, 3] = -centre / radius
    return to_unit, centre, radius


def uv_checker(size: int = 256, squares: int = 8) -> torch.Tensor:
    """[size, size, 3] float: a checkerboard whose colour runs red along u and green along v,
    so that the orientation and stretch of a parameterization can be read off."""
    t = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(t, t, indexing="ij")
    dark = ((u * squares).floor() + (v * squares).floor()) % 2
    base = torch.stack([0.25 + 0.75 * u, 0.25 + 0.75 * v, torch.full_like(u, 0.6)], -1)
    return base * (0.55 + 0.45 * dark[..., None])


def _sample(texture: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor) -> torch.Tensor:
    import glrast as dr

    levels = mip_levels(*texture.shape[:2])
    if levels:
        return dr.texture(texture[None], uv, uv_da, filter_mode="linear-mipmap-linear", max_mip_level=levels)
    return dr.texture(texture[None], uv, filter_mode="linear")


def _surface(m: Any, rast: torch.Tensor, rast_db: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """[1, H, W, 3]: the mesh's texture, else its vertex colours, else grey lit from the eye."""
    import glrast as dr

    if m.texture is not None:
        uv, uv_da = dr.interpolate(m.uv, rast, m.tri, rast_db=rast_db, diff_attrs="all")
        return _sample(m.texture, uv, uv_da)
    if m.colors is not None:
        return dr.interpolate(m.colors, rast, m.tri)[0]
    # |n . v| with v the direction to the eye: two-sided, since nothing is culled
    attrs, _ = dr.interpolate(torch.cat([m.pos, m.normals], -1), rast, m.tri)
    view = torch.nn.functional.normalize(eye.to(attrs) - attrs[..., :3], dim=-1)
    lit = (torch.nn.functional.normalize(attrs[..., 3:], dim=-1) * view).sum(-1).abs()
    return (0.15 + 0.75 * lit)[..., None].expand(*lit.shape, 3)


def _id_colors(ids: torch.Tensor) -> torch.Tensor:
    """A distinct colour per triangle id (an integer hash of the id into three bytes)."""
    h = (ids.clamp(min=0) * 2654435761 + 0x9E3779B9) & 0xFFFFFF
    rgb = torch.stack([(h >> 16) & 255, (h >> 8) & 255, h & 255], -1).float() / 255
    return 0.2 + 0.8 * rgb


def shade(glctx: Any, m: Any, mvp: torch.Tensor, eye: torch.Tensor, height: int, width: int,
          mode: str = "shaded") -> torch.Tensor:  # fmt: skip
    """RGBA image [H, W, 4] in [0, 1] of mesh `m` (a glrast.mesh.Mesh), row 0 = bottom; alpha
    is antialiased coverage.

    mvp: [4, 4] clip-from-mesh matrix; eye: [3] camera centre in mesh coordinates.
    mode: 'shaded' (texture, else vertex colours, else grey lit from the eye), 'normals'
        (n * 0.5 + 0.5), 'depth' (near = bright, over the visible range), 'ids' (a colour
        per triangle), 'uv' (a checkerboard through the mesh's texture coordinates) or
        'wireframe' (the shaded image with the triangle edges, found from the barycentrics
        and their screen-space derivatives, one pixel wide).
    """
    import glrast as dr

    from . import camera

    if mode not in MODES:
        raise ValueError(f"shade: mode must be one of {MODES}, got {mode!r}")
    if mode == "uv" and m.uv is None:
        raise ValueError("shade: mode 'uv' needs a mesh with texture coordinates")
    clip = camera.transform(mvp.to(m.pos.device), m.pos).contiguous()
    rast, rast_db = dr.rasterize(glctx, clip, m.tri, (height, width))
    mask = (rast[..., 3:] > 0).float()
    if mode == "normals":
        normals, _ = dr.interpolate(m.normals, rast, m.tri)
        color = torch.nn.functional.normalize(normals, dim=-1) * 0.5 + 0.5
    elif mode == "depth":
        depth = rast[..., 2:3]
        covered = depth[mask > 0]
        near, far = (covered.min(), covered.max()) if covered.numel() else (depth.new_tensor(0), depth.new_tensor(1))
        color = (1 - 0.8 * (depth - near) / (far - near).clamp(min=1e-12)).expand(*depth.shape[:-1], 3)
    elif mode == "ids":
        color = _id_colors(dr.triangle_index(rast))
    elif mode == "uv":
        uv, uv_da = dr.interpolate(m.uv, rast, m.tri, rast_db=rast_db, diff_attrs="all")
        color = _sample(uv_checker().to(m.pos.device), uv, uv_da)
    else:
        color = _surface(m, rast, rast_db, eye)
    if mode == "wireframe":
        u, v = rast[..., 0], rast[..., 1]
        du, dv = rast_db[..., 0:2], rast_db[..., 2:4]  # (d/dx, d/dy) of u and of v, per pixel
        bary = torch.stack([u, v, 1 - u - v], -1)
        grads = torch.stack([du.norm(dim=-1), dv.norm(dim=-1), (du + dv).norm(dim=-1)], -1)
        pixels_to_edge = (bary / grads.clamp(min=1e-12)).min(-1).values
        line = (1 - pixels_to_edge).clamp(0, 1)[..., None]
        color = color * (1 - line) + color.new_tensor([1.0, 0.55, 0.1]) * line
    rgba = dr.antialias(torch.cat([color * mask, mask], -1).contiguous(), rast, clip, m.tri)[0]
    alpha = rgba[..., 3:]
    return torch.cat([rgba[..., :3] / alpha.clamp(min=1e-6), alpha], -1).clamp(0, 1)
