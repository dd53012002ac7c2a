"""interpolate: vertex attributes to pixels, with screen-space derivatives."""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Sequence

import torch

from . import _checks, kernels, ops
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
        ("pixels", ctypes.c_longlong),
        ("attr_image_stride", ctypes.c_longlong),
        ("num_attrs", ctypes.c_int),
        ("num_diff", ctypes.c_int),
        ("num_tris", ctypes.c_int),
    ]


def _params(attr, rast, rast_db, tri, diff, **fields) -> InterpolateParams:
    """The params of a launch; rast_db is read only for the attributes in `diff`."""
    diff_idx = _diff_tensor(tuple(diff), attr.device) if diff else None  # cached: alive through the launch
    n, h, w, _ = rast.shape
    stride = attr.shape[1] * attr.shape[2] if attr.shape[0] > 1 else 0
    return InterpolateParams(
        attr=attr.data_ptr(),
        rast=rast.data_ptr(),
        rast_db=ptr(rast_db) if diff else None,
        tri=tri.data_ptr(),
        diff_idx=ptr(diff_idx),
        pixels_per_image=h * w,
        pixels=n * h * w,
        attr_image_stride=stride,
        num_attrs=attr.shape[2],
        num_diff=len(diff),
        num_tris=tri.shape[0],
        **fields,
    )


@functools.lru_cache(maxsize=64)
def _diff_tensor(diff: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The attribute indices of diff_attrs as the kernels read them (made once per list and device)."""
    return torch.tensor(diff, dtype=torch.int32, device=device)


def _interpolate(attr, rast, rast_db, tri, diff):
    _checks.triangles(_FN, tri, attr.shape[1], holder="attr")
    out, out_da = _interpolate_fake(attr, rast, rast_db, tri, diff)
    params = _params(attr, rast, rast_db, tri, diff, out=out.data_ptr(), out_da=ptr(out_da) if diff else None)
    kernels.module("interpolate", attr.device).launch("interpolate_fwd", params, rast.numel() // 4)
    return out, out_da


def _interpolate_fake(attr, rast, rast_db, tri, diff):
    n, h, w, _ = rast.shape
    return attr.new_empty(n, h, w, attr.shape[2]), attr.new_empty(n, h, w, 2 * len(diff))


def _interpolate_setup(ctx, inputs, output):
    attr, rast, rast_db, tri, diff = inputs
    ctx.save_for_backward(attr, rast, rast_db, tri)
    ctx.diff = diff


def _interpolate_backward(ctx, grad_out, grad_da):
    attr, rast, rast_db, tri = ctx.saved_tensors
    use_da = bool(ctx.diff)
    grad_da = grad_da if use_da else None
    needs = list(ctx.needs_input_grad[:3])  # attr, rast, rast_db: what nobody wants is not computed
    grad_attr, grad_rast, grad_rast_db = interpolate_backward(
        attr, rast, rast_db, tri, ctx.diff, grad_out, grad_da, needs
    )
    need_attr, need_rast, need_db = needs
    return (grad_attr if need_attr else None, grad_rast if need_rast else None,
            grad_rast_db if use_da and need_db else None, None, None)  # fmt: skip


def _backward_needs(grad_da, needs):
    """(attr, rast, rast_db) as computed: rast_db's gradient exists only with grad_da."""
    need_attr, need_rast, need_db = needs
    return need_attr, need_rast, need_db and grad_da is not None


def _interpolate_backward_impl(attr, rast, rast_db, tri, diff, grad_out, grad_da, needs):
    """(grad_attr, grad_rast, grad_rast_db) for needs = [attr, rast, rast_db]; a gradient not
    needed (rast_db's without grad_da) is an empty stand-in."""
    need_attr, need_rast, need_db = _backward_needs(grad_da, needs)
    grad_rast = torch.empty_like(rast) if need_rast else ops.absent(rast)
    grad_rast_db = torch.empty_like(rast) if need_db else ops.absent(rast)
    mod = kernels.module("interpolate", attr.device)
    grad_slots, accumulator = kernels.accumulator(mod, attr.shape, attr.device) if need_attr else (None, Accumulator())
    # Kept in locals: the kernel only sees raw pointers, so the tensors must outlive the launch.
    grad_out = grad_out.contiguous()
    grad_da = grad_da.contiguous() if grad_da is not None else None
    params = _params(
        attr, rast, rast_db, tri, diff,
        grad_out=grad_out.data_ptr(), grad_da=ptr(grad_da), grad_attr=accumulator,
        grad_rast=grad_rast.data_ptr() if need_rast else None,
        grad_rast_db=grad_rast_db.data_ptr() if need_db else None,
    )  # fmt: skip
    mod.launch("interpolate_bwd", params, rast.numel() // 4)
    return kernels.collect(grad_slots) if need_attr else ops.absent(attr), grad_rast, grad_rast_db


def _interpolate_backward_fake(attr, rast, rast_db, tri, diff, grad_out, grad_da, needs):
    wanted = zip(_backward_needs(grad_da, needs), (attr, rast, rast))
    return tuple(torch.empty_like(like) if need else like.new_empty(0) for need, like in wanted)


def _double_setup(ctx, inputs, output):
    attr, rast, rast_db, tri, diff, grad_out, grad_da, needs = inputs
    ctx.save_for_backward(attr, rast, rast_db, tri, grad_out, grad_da)
    ctx.diff = diff
    ctx.set_materialize_grads(False)


def _double_backward(ctx, gg_attr, gg_rast, gg_rast_db):
    """The derivative of interpolate's backward, from interpolate and its backward again.

    out = a2 + u (a0 - a2) + v (a1 - a2) per pixel and out_da = (a0 - a2, a1 - a2) · rast_db are
    linear in attr and in (u, v, rast_db) apart (bilinear jointly), so each term of the second
    derivative is one of the two ops with one argument replaced by a cotangent: (gg_u, gg_v) stand
    in for the barycentrics, less the affine part that (0, 0) gives."""
    attr, rast, rast_db, tri, grad_out, grad_da = ctx.saved_tensors
    diff = ctx.diff
    gg_attr = None if gg_attr is None else gg_attr.contiguous()  # cotangents may be expanded or strided
    gg_rast_db = None if gg_rast_db is None or grad_da is None else gg_rast_db.contiguous()
    d_out = d_da = d_attr = d_rast = d_db = None
    if gg_attr is not None:
        d_out, d_da = interpolate_op(gg_attr, rast, rast_db, tri, diff)
        _, d_rast, d_db = interpolate_backward(gg_attr, rast, rast_db, tri, diff, grad_out, grad_da, _RAST_GRADS)
        d_db = d_db if grad_da is not None else None
    if gg_rast is not None or gg_rast_db is not None:
        uv = torch.zeros_like(rast[..., :2]) if gg_rast is None else gg_rast[..., :2]
        rast_g = torch.cat([uv, rast[..., 2:]], -1)
        rast_0 = torch.cat([torch.zeros_like(uv), rast[..., 2:]], -1)
        db_g = None if rast_db is None else (torch.zeros_like(rast_db) if gg_rast_db is None else gg_rast_db)
        db_0 = None if rast_db is None else torch.zeros_like(rast_db)
        out_g, da_g = interpolate_op(attr, rast_g, db_g, tri, diff)
        out_0, _ = interpolate_op(attr, rast_0, db_0, tri, diff)
        d_out = _add(d_out, out_g - out_0)
        d_da = _add(d_da, da_g)
        attr_g = interpolate_backward(attr, rast_g, db_g, tri, diff, grad_out, grad_da, _ATTR_GRAD)[0]
        attr_0 = interpolate_backward(attr, rast_0, db_0, tri, diff, grad_out, grad_da, _ATTR_GRAD)[0]
        d_attr = attr_g - attr_0
    if rast_db is None:
        d_db = None
    return d_attr, d_rast, d_db, None, None, d_out, d_da if grad_da is not None else None, None


_RAST_GRADS, _ATTR_GRAD = [False, True, True], [True, False, False]  # interpolate_backward's needs


def _add(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else a + b


interpolate_op = ops.Op(
    "interpolate",
    "(Tensor attr, Tensor rast, Tensor? rast_db, Tensor tri, int[] diff) -> (Tensor, Tensor)",
    _interpolate,
    _interpolate_fake,
    _interpolate_setup,
    _interpolate_backward,
)
interpolate_backward = ops.Op(
    "interpolate_backward",
    "(Tensor attr, Tensor rast, Tensor? rast_db, Tensor tri, int[] diff, Tensor grad_out, Tensor? grad_da, "
    "bool[] needs) -> (Tensor, Tensor, Tensor)",
    _interpolate_backward_impl,
    _interpolate_backward_fake,
    _double_setup,
    _double_backward,
)


def _diff_indices(diff_attrs: str | Sequence[int] | None, num_attrs: int) -> list[int]:
    if diff_attrs is None:
        return []
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
    return idx


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
    empty [N, H, W, 0] tensor. Gradients flow to attr, rast (u, v) and rast_db, with second
    derivatives too (create_graph=True builds a real second-order graph). attr may be float16 or
    bfloat16: computed in float32, out and out_da come back in attr's dtype; rast and rast_db
    must be float32. Indices in tri outside [0, V) raise a ValueError from the op.
    """
    dtype = attr.dtype if isinstance(attr, torch.Tensor) else None
    attr = _checks.tensor(_FN, "attr", attr, "[V, A] or [N, V, A]", ndims=(2, 3), low_precision=True)
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
    diff = _diff_indices(diff_attrs, attr.shape[2])
    if diff and rast_db is None:
        raise ValueError(
            f"{_FN}: diff_attrs={diff_attrs!r} asks for attribute derivatives, which need rast_db "
            "(the second output of rasterize)"
        )
    if not diff:
        rast_db = None
    out, out_da = interpolate_op(attr, rast, rast_db, tri, diff)
    return (out, out_da) if dtype is torch.float32 else (out.to(dtype), out_da.to(dtype))
