"""Reference rasterization maths and interpolate, in plain torch (float64 where it helps).

The kernels use a closed form for the barycentrics; this oracle instead solves
the 3x3 linear system of clip-space barycentrics per pixel and takes screen-space
derivatives with autograd, so the two share no formula.
"""

import torch

from glrast import ids

__all__ = [
    "pixel_centres_ndc",
    "inside_triangle",
    "barycentrics",
    "interpolate",
    "encode_triangle_id",
]


def pixel_centres_ndc(height: int, width: int, dtype=torch.float64):
    """(xn [H, W], yn [H, W]) of every pixel centre; row 0 is NDC y = -1."""
    ys = (torch.arange(height, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=dtype) + 0.5) / width * 2 - 1
    yn, xn = torch.meshgrid(ys, xs, indexing="ij")
    return xn, yn


def inside_triangle(pos: torch.Tensor, height: int, width: int):
    """For one triangle pos [3, 4] with w > 0: (inside [H, W] bool, margin [H, W]),
    margin being the distance in pixels from the centre to the nearest edge."""
    p = pos.double()
    sx = (p[:, 0] / p[:, 3] + 1) / 2 * width
    sy = (p[:, 1] / p[:, 3] + 1) / 2 * height
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    dists = []
    area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])
    for j in range(3):
        a, b = j, (j + 1) % 3
        ex, ey = sx[b] - sx[a], sy[b] - sy[a]
        cross = ex * (yy - sy[a]) - ey * (xx - sx[a])
        dists.append(torch.sign(area) * cross / torch.hypot(ex, ey))
    d = torch.stack(dists)
    return (d > 0).all(0), d.min(0).values.abs()


def barycentrics(pos: torch.Tensor, tri: torch.Tensor, tri_id: torch.Tensor, verts_per_image: int = 0):
    """Perspective-correct (u, v) and their pixel derivatives at every pixel centre.

    pos: [N, V, 4] or [V, 4] clip space (instanced / range mode); tri: [T, 3];
    tri_id: [N, H, W] int64 triangle ids (-1 empty), e.g. from glrast.triangle_index.
    Returns uv [N, H, W, 2] (within the triangle) and db [N, H, W, 4] = (du/dX, du/dY, dv/dX, dv/dY),
    zero at empty pixels, differentiable w.r.t. pos.
    """
    n, h, w = tri_id.shape
    flat_pos = pos.reshape(-1, 4).double()
    xn0, yn0 = pixel_centres_ndc(h, w)
    xn = xn0.expand(n, h, w).clone().requires_grad_(True)
    yn = yn0.expand(n, h, w).clone().requires_grad_(True)
    covered = tri_id >= 0
    image = torch.arange(n).view(n, 1, 1).expand(n, h, w)
    base = image * (pos.shape[1] if pos.ndim == 3 else 0)
    corners = tri.long()[tri_id.clamp(min=0)] + base[..., None]  # [N, H, W, 3]
    p = flat_pos[corners]  # [N, H, W, 3, 4]
    # Rows: sum_k lam_k (x_k - xn w_k) = 0, sum_k lam_k (y_k - yn w_k) = 0, sum_k lam_k = 1.
    m = torch.stack(
        [
            p[..., 0] - xn[..., None] * p[..., 3],
            p[..., 1] - yn[..., None] * p[..., 3],
            torch.ones_like(p[..., 0]),
        ],
        dim=-2,
    )
    m = torch.where(covered[..., None, None], m, torch.eye(3, dtype=m.dtype))
    rhs = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype).expand(n, h, w, 3)
    lam = torch.linalg.solve(m, rhs)
    u, v = lam[..., 0], lam[..., 1]
    du_dx, du_dy = torch.autograd.grad(u.sum(), (xn, yn), create_graph=True)
    dv_dx, dv_dy = torch.autograd.grad(v.sum(), (xn, yn), create_graph=True)
    # A pixel centre GL covers but the solve puts outside the triangle (slivers, GL's snapped
    # vertices): the negative barycentrics clamped to 0, renormalised; the derivatives stay the
    # triangle's own.
    outside = (lam < 0).any(-1, keepdim=True)
    inside = lam.clamp(min=0)
    lam = torch.where(outside, inside / inside.sum(-1, keepdim=True), lam)
    uv = lam[..., :2]
    db = torch.stack([du_dx * 2 / w, du_dy * 2 / h, dv_dx * 2 / w, dv_dy * 2 / h], -1)
    mask = covered[..., None]
    return torch.where(mask, uv, 0.0), torch.where(mask, db, 0.0)


def interpolate(attr, uv, db, tri, tri_id, diff_idx=None):
    """out [N, H, W, A] and out_da [N, H, W, 2D] from barycentrics (uv, db) and ids.

    attr: [V, A] or [N, V, A] (N = 1 broadcasts); range-mode ids are global."""
    n = tri_id.shape[0]
    if attr.ndim == 2:
        attr = attr[None]
    attr = attr.expand(n, *attr.shape[1:])
    covered = (tri_id >= 0)[..., None]
    corners = tri.long()[tri_id.clamp(min=0)]  # [N, H, W, 3]
    a = torch.stack([torch.stack([attr[i][corners[i][..., k]] for i in range(n)]) for k in range(3)], -2)
    u, v = uv[..., 0:1], uv[..., 1:2]
    out = u * a[..., 0, :] + v * a[..., 1, :] + (1 - u - v) * a[..., 2, :]
    out = torch.where(covered, out, 0.0)
    if diff_idx is None:
        return out, None
    e0 = (a[..., 0, :] - a[..., 2, :])[..., diff_idx]
    e1 = (a[..., 1, :] - a[..., 2, :])[..., diff_idx]
    dx = e0 * db[..., 0:1] + e1 * db[..., 2:3]
    dy = e0 * db[..., 1:2] + e1 * db[..., 3:4]
    da = torch.stack([dx, dy], -1).reshape(*dx.shape[:-1], 2 * len(diff_idx))
    return out, torch.where(covered, da, 0.0)


def encode_triangle_id(tri_id: int) -> float:
    """The float stored in rast[..., 3] for a triangle id (SPEC.md, rasterize)."""
    import struct

    id1 = tri_id + 1
    if id1 <= ids.EXACT_MAX:
        return float(id1)
    return struct.unpack("<f", struct.pack("<I", ids.BITS_BASE + id1))[0]
