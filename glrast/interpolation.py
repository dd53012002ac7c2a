"""interpolate: vertex attributes to pixels, with screen-space derivatives."""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Sequence

import torch

from . import _checks, kernels
from .params import Accumulator, Params, ptr

_FN = "interpolate"


class InterpolateParams(Params):
    """Mirror of InterpolateParams in csrc/interpolate.cu."""

    _fields_ = [
        ("attr", ctypes.c_void_p),
        ("rast", ctypes.c_void_p),
        ("rast_db", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("diff_idx", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("out_da", ctypes.c_void_p),
        ("grad_out", ctypes.c_void_p),
        ("grad_da", ctypes.c_void_p),
        ("grad_attr", Accumulator),
        ("grad_rast", ctypes.c_void_p),
        ("grad_rast_db", ctypes.c_void_p),
        ("pixels_per_image", ctypes.c_longlong),
        ("attr_image_stride", ctypes.c_longlong),
        ("num_attrs", ctypes.c_int),
        ("num_diff", ctypes.c_int),
        ("num_tris", ctypes.c_int),
    ]


def _params(attr, rast, rast_db, tri, diff_idx, **fields) -> InterpolateParams:
    n, h, w, _ = rast.shape
    stride = attr.shape[1] * attr.shape[2] if attr.shape[0] > 1 else 0
    return InterpolateParams(
        attr=attr.data_ptr(),
        rast=rast.data_ptr(),
        rast_db=ptr(rast_db),
        tri=tri.data_ptr(),
        diff_idx=ptr(diff_idx),
        pixels_per_image=h * w,
        attr_image_stride=stride,
        num_attrs=attr.shape[2],
        num_diff=0 if diff_idx is None else diff_idx.numel(),
        num_tris=tri.shape[0],
        **fields,
    )


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, rast_db, tri, diff_idx):
        n, h, w, _ = rast.shape
        out = torch.empty(n, h, w, attr.shape[2], dtype=torch.float32, device=attr.device)
        num_diff = 0 if diff_idx is None else diff_idx.numel()
        out_da = torch.empty(n, h, w, 2 * num_diff, dtype=torch.float32, device=attr.device)
        out_da_ptr = out_da.data_ptr() if num_diff else None
        params = _params(attr, rast, rast_db, tri, diff_idx, out=out.data_ptr(), out_da=out_da_ptr)
        kernels.module("interpolate", attr.device).launch("interpolate_fwd", params, n * h * w)
        ctx.save_for_backward(attr, rast, rast_db, tri, diff_idx)
        return out, out_da

    @staticmethod
    def backward(ctx, grad_out, grad_da):
        attr, rast, rast_db, tri, diff_idx = ctx.saved_tensors
        n, h, w, _ = rast.shape
        mod = kernels.module("interpolate", attr.device)
        grad_slots, accumulator = kernels.accumulator(mod, attr.shape, attr.device)
        grad_rast = torch.empty_like(rast)
        use_da = diff_idx is not None and grad_da is not None
        grad_rast_db = torch.empty_like(rast_db) if use_da else None
        # Kept in locals: the kernel only sees raw pointers, so the tensors must outlive the launch.
        grad_out = grad_out.contiguous()
        grad_da = grad_da.contiguous() if use_da else None
        params = _params(
            attr,
            rast,
            rast_db,
            tri,
            diff_idx,
            grad_out=grad_out.data_ptr(),
            grad_da=ptr(grad_da),
            grad_attr=accumulator,
            grad_rast=grad_rast.data_ptr(),
            grad_rast_db=ptr(grad_rast_db),
        )
        mod.launch("interpolate_bwd", params, n * h * w)
        return kernels.collect(grad_slots), grad_rast, grad_rast_db, None, None


def _diff_indices(diff_attrs: str | Sequence[int] | None, num_attrs: int, device: torch.device) -> torch.Tensor | None:
    if diff_attrs is None:
        return None
    if isinstance(diff_attrs, str):
        if diff_attrs != "all":
            raise ValueError(f"{_FN}: diff_attrs must be 'all' or a list of attribute indices, got {diff_attrs!r}")
        idx = list(range(num_attrs))
    else:
        try:
            idx = [operator.index(k) for k in diff_attrs if not isinstance(k, bool)]
            ok = len(idx) == len(diff_attrs)  # type: ignore[arg-type]
        except TypeError:
            ok = False
        if not ok:
            raise TypeError(
                f"{_FN}: diff_attrs must be 'all' or a sequence of int attribute indices, got {diff_attrs!r}"
            )
        bad = [k for k in idx if not 0 <= k < num_attrs]
        if bad:
            raise ValueError(
                f"{_FN}: diff_attrs index {bad[0]} is outside [0, {num_attrs}) (attr has {num_attrs} attributes)"
            )
    if not idx:
        return None
    return torch.tensor(idx, dtype=torch.int32, device=device)


def interpolate(
    attr: torch.Tensor,  # [V, A] or [N, V, A] (N = 1 broadcasts)
    rast: torch.Tensor,  # [N, H, W, 4] from rasterize
    tri: torch.Tensor,  # [T, 3] int32
    rast_db: torch.Tensor | None = None,  # [N, H, W, 4] from rasterize
    diff_attrs: str | Sequence[int] | None = None,  # 'all' or attribute indices
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate vertex attributes: returns out [N, H, W, A] (zero where rast
    is empty, or names a triangle id outside tri) and out_da [N, H, W, 2·len(diff_attrs)] = (dA/dX, dA/dY) per
    selected attribute when diff_attrs is given (which then needs rast_db, as in nvdiffrast), else an
    empty [N, H, W, 0] tensor. Gradients flow to attr, rast (u, v) and rast_db.
    """
    attr = _checks.tensor(_FN, "attr", attr, "[V, A] or [N, V, A]", ndims=(2, 3))
    rast = _checks.tensor(_FN, "rast", rast, "[N, H, W, 4]", ndims=(4,), last=4)
    tri = _checks.tensor(_FN, "tri", tri, "[T, 3]", ndims=(2,), last=3, dtype=torch.int32)
    if rast_db is not None:
        rast_db = _checks.tensor(_FN, "rast_db", rast_db, "[N, H, W, 4]", ndims=(4,), last=4)
        if rast_db.shape != rast.shape:
            raise ValueError(
                f"{_FN}: rast_db must have the shape of rast {list(rast.shape)}, got {_checks.describe(rast_db)}"
            )
    _checks.same_device(_FN, attr.device, rast=rast, tri=tri, rast_db=rast_db)
    if attr.ndim == 2:
        attr = attr[None]
    n = rast.shape[0]
    if attr.shape[0] not in (1, n):
        raise ValueError(
            f"{_FN}: attr has {attr.shape[0]} attribute sets for a batch of {n} images (expected 1 or {n})"
        )
    _checks.triangles(_FN, tri, attr.shape[1], holder="attr")
    diff_idx = _diff_indices(diff_attrs, attr.shape[2], attr.device)
    if diff_idx is not None and rast_db is None:
        raise ValueError(
            f"{_FN}: diff_attrs={diff_attrs!r} asks for attribute derivatives, which need rast_db "
            "(the second output of rasterize)"
        )
    if diff_idx is None:
        rast_db = None
    return _Interpolate.apply(attr, rast, rast_db, tri, diff_idx)
