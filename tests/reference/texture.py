"""Reference texture lookups in plain torch (computed in float64), differentiated by autograd.

Built to share as little as possible with the kernels: bilinear filtering is
torch's grid_sample (wrap through a circularly padded texture), nearest is a
gather, cube faces are padded with a ring of texels found by projecting the
ring's texel centres onto the cube (corners: the mean of their three
neighbours) and then filtered like 2D textures, the cube LOD Jacobian is a
Jacobian-vector product through autograd, the footprint's eigenvalue comes
from eigvalsh, and the trilinear blend from hat weights over all levels.
"""

import torch
from torch.nn.functional import grid_sample

__all__ = ["construct_mip", "cube_face_coords", "cube_face_direction", "texture"]

MIP_FILTERS = ("linear-mipmap-nearest", "linear-mipmap-linear")

# OpenGL's cube face table: face -> (major axis, sign), (axis, sign) of sc, (axis, sign) of tc.
_FACES = (
    ((0, 1.0), (2, -1.0), (1, -1.0)),  # +X: sc = -z, tc = -y
    ((0, -1.0), (2, 1.0), (1, -1.0)),  # -X: sc = +z, tc = -y
    ((1, 1.0), (0, 1.0), (2, 1.0)),  # +Y: sc = +x, tc = +z
    ((1, -1.0), (0, 1.0), (2, -1.0)),  # -Y: sc = +x, tc = -z
    ((2, 1.0), (0, 1.0), (1, -1.0)),  # +Z: sc = +x, tc = -y
    ((2, -1.0), (0, -1.0), (1, -1.0)),  # -Z: sc = -x, tc = -y
)


def construct_mip(tex: torch.Tensor, max_mip_level=None, cube: bool = False) -> list[torch.Tensor]:
    """Levels 1.. of tex ([N, h, w, C] or [N, 6, s, s, C]): pairwise means along each side > 1."""
    levels = []
    cur = tex
    while tuple(cur.shape[-3:-1]) != (1, 1) and (max_mip_level is None or len(levels) < max_mip_level):
        if cur.shape[-3] > 1:
            cur = (cur[..., 0::2, :, :] + cur[..., 1::2, :, :]) / 2
        if cur.shape[-2] > 1:
            cur = (cur[..., :, 0::2, :] + cur[..., :, 1::2, :]) / 2
        levels.append(cur)
    return levels


def cube_face_coords(d: torch.Tensor, face: torch.Tensor | None = None):
    """(face, s, t) of directions d [..., 3]; s, t in [0, 1] are differentiable. The face
    is the largest |component|'s (ties: x, then y) unless given."""
    if face is None:
        a = d.detach().abs()
        axis = torch.where(
            (a[..., 0] >= a[..., 1]) & (a[..., 0] >= a[..., 2]), 0, torch.where(a[..., 1] >= a[..., 2], 1, 2)
        )
        negative = torch.gather(d.detach(), -1, axis[..., None])[..., 0] <= 0
        face = 2 * axis + negative.long()
    sc = tc = ma = torch.zeros_like(d[..., 0])
    for f, ((m, sm), (s_ax, ss), (t_ax, st)) in enumerate(_FACES):
        on = face == f
        sc = torch.where(on, ss * d[..., s_ax], sc)
        tc = torch.where(on, st * d[..., t_ax], tc)
        ma = torch.where(on, sm * d[..., m], ma)
    return face, 0.5 * (sc / ma + 1), 0.5 * (tc / ma + 1)


def cube_face_direction(face: int, s, t) -> torch.Tensor:
    """The direction that looks up face coordinates (s, t) on `face` (with |major component| 1)."""
    (m, sm), (s_ax, ss), (t_ax, st) = _FACES[face]
    s = torch.as_tensor(s, dtype=torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64)
    s, t = torch.broadcast_tensors(s, t)
    d = torch.zeros(*s.shape, 3, dtype=torch.float64)
    d[..., m] = sm
    d[..., s_ax] = ss * (2 * s - 1)
    d[..., t_ax] = st * (2 * t - 1)
    return d


def _pad_cube(level: torch.Tensor) -> torch.Tensor:
    """[N, 6, n, n, C] -> [N, 6, n + 2, n + 2, C]: each face with a ring of its neighbours' texels."""
    n = level.shape[2]
    idx = torch.arange(-1, n + 1)
    iy, ix = torch.meshgrid(idx, idx, indexing="ij")
    src_face = torch.empty(6, n + 2, n + 2, dtype=torch.long)
    src_y, src_x = torch.empty_like(src_face), torch.empty_like(src_face)
    for f in range(6):
        d = cube_face_direction(f, (ix + 0.5) / n, (iy + 0.5) / n)
        face, s, t = cube_face_coords(d)
        src_face[f] = face
        src_x[f] = torch.floor(s * n).long().clamp(0, n - 1)
        src_y[f] = torch.floor(t * n).long().clamp(0, n - 1)
    padded = level[:, src_face, src_y, src_x].clone()
    for cy, cx, dy, dx in ((0, 0, 1, 1), (0, n + 1, 1, -1), (n + 1, 0, -1, 1), (n + 1, n + 1, -1, -1)):
        padded[:, :, cy, cx] = (
            padded[:, :, cy + dy, cx] + padded[:, :, cy, cx + dx] + padded[:, :, cy + dy, cx + dx]
        ) / 3
    return padded


def _grid(coord: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """grid_sample coordinate (align_corners=False) of texture coordinate `coord` on a side
    of `size` texels that has been padded by `pad` texels on both ends."""
    x = coord * size - 0.5 + pad
    return (2 * x + 1) / (size + 2 * pad) - 1


def _bilinear(img: torch.Tensor, s: torch.Tensor, t: torch.Tensor, pad: int, padding_mode: str) -> torch.Tensor:
    """img [N, h + 2 pad, w + 2 pad, C] (a w x h texture plus padding), s, t [N, H, W] -> [N, H, W, C]."""
    h, w = img.shape[1] - 2 * pad, img.shape[2] - 2 * pad
    grid = torch.stack([_grid(s, w, pad), _grid(t, h, pad)], -1)
    out = grid_sample(img.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.permute(0, 2, 3, 1)


def _sample_2d(level, s, t, boundary, nearest):
    n, h, w, _ = level.shape
    if nearest:
        if boundary == "wrap":  # the fraction first: a huge coordinate's texel index would overflow int64
            s, t = s - torch.floor(s), t - torch.floor(t)
        ix = torch.floor(s * w).clamp(-1, w).long()
        iy = torch.floor(t * h).clamp(-1, h).long()
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        if boundary == "wrap":
            ix, iy = ix % w, iy % h
        else:
            ix, iy = ix.clamp(0, w - 1), iy.clamp(0, h - 1)
        out = level[torch.arange(n)[:, None, None], iy, ix]
        return out * inside[..., None] if boundary == "zero" else out
    if boundary == "wrap":
        s, t = s - torch.floor(s), t - torch.floor(t)
        img = torch.cat([level[:, -1:], level, level[:, :1]], 1)
        img = torch.cat([img[:, :, -1:], img, img[:, :, :1]], 2)
        return _bilinear(img, s, t, 1, "border")
    return _bilinear(level, s, t, 0, "border" if boundary == "clamp" else "zeros")


def _sample_cube(level, face, s, t, nearest):
    n, _, size = level.shape[:3]
    if nearest:
        ix = torch.floor(s * size).long().clamp(0, size - 1)
        iy = torch.floor(t * size).long().clamp(0, size - 1)
        return level[torch.arange(n)[:, None, None], face, iy, ix]
    padded = _pad_cube(level)
    out = 0
    for f in range(6):
        out = out + torch.where((face == f)[..., None], _bilinear(padded[:, f], s, t, 1, "border"), 0)
    return out


def _directional_derivative(f, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_f(x) v by two reverse-mode passes (J^T u, then its derivative by u), kept differentiable."""
    x = x if x.requires_grad else x.detach().requires_grad_()
    y = f(x)
    u = torch.zeros_like(y, requires_grad=True)
    (jt_u,) = torch.autograd.grad(y, x, u, create_graph=True)
    (jv,) = torch.autograd.grad(jt_u, u, v, create_graph=True)
    return jv


def _footprint_level(J: torch.Tensor) -> torch.Tensor:
    """0.5 log2 of the larger eigenvalue of J^T J, J [..., 2, 2] (rows: texel x, y; columns: X, Y)."""
    lam = torch.linalg.eigvalsh(J.mT @ J)[..., -1]
    return 0.5 * torch.log2(lam.clamp_min(1e-300))


def texture(
    tex,
    uv,
    uv_da=None,
    mip_level_bias=None,
    mip=None,
    filter_mode="auto",
    boundary_mode="wrap",
    max_mip_level=None,
):
    """Same arguments and meaning as glrast.texture (mip: None or a list of level tensors)."""
    cube = boundary_mode == "cube"
    if filter_mode == "auto":
        filter_mode = "linear-mipmap-linear" if uv_da is not None or mip_level_bias is not None else "linear"
    dtype = tex.dtype
    tex, uv = tex.double(), uv.double()
    n = uv.shape[0]
    levels = [tex]
    if filter_mode in MIP_FILTERS:
        levels += [lv.double() for lv in mip] if mip is not None else construct_mip(tex, max_mip_level, cube)
        if max_mip_level is not None:
            levels = levels[: max_mip_level + 1]
    levels = [lv.expand(n, *lv.shape[1:]) for lv in levels]

    if cube:
        valid = torch.isfinite(uv).all(-1) & (uv != 0).any(-1)
        d = torch.where(valid[..., None], uv, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        face, s, t = cube_face_coords(d)
    else:
        valid = torch.isfinite(uv).all(-1)
        st = torch.where(valid[..., None], uv, 0.5)
        s, t = st[..., 0], st[..., 1]
    nearest = filter_mode == "nearest"

    def sample(k):
        if cube:
            return _sample_cube(levels[k], face, s, t, nearest)
        return _sample_2d(levels[k], s, t, boundary_mode, nearest)

    if filter_mode not in MIP_FILTERS:
        out = sample(0)
    else:
        level = 0 if mip_level_bias is None else mip_level_bias.double()
        if uv_da is not None:
            da = uv_da.double()
            if cube:
                size = tex.shape[2]
                st = lambda x: torch.stack(cube_face_coords(x, face)[1:], -1)  # noqa: E731
                cols = [_directional_derivative(st, d, da[..., xy::2]) for xy in range(2)]  # by screen X, Y
                J = torch.stack(cols, -1) * size
            else:
                h, w = tex.shape[1:3]
                J = da.unflatten(-1, (2, 2)) * torch.tensor([w, h], dtype=torch.float64)[:, None]
            level = level + _footprint_level(J)
        level = torch.clamp(level * torch.ones_like(s), 0, len(levels) - 1)
        out = 0
        for k in range(len(levels)):
            if filter_mode == "linear-mipmap-linear":
                weight = torch.relu(1 - (level - k).abs())
            else:
                weight = (torch.floor(level) == k).double()
            out = out + weight[..., None] * sample(k)
    return torch.where(valid[..., None], out, 0).to(dtype)
