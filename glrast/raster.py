"""rasterize and DepthPeeler: validation, the GL visibility pass (through the
context's pipeline, glrast/pipeline.py), and the kernels that turn triangle ids
into rast and rast_db and run that backwards (csrc/raster.cu)."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from . import _checks, ids, kernels, ops
from ._log import logger
from .context import RasterizeGLContext
from .params import Accumulator, Params, ptr

_FN = "rasterize"


class RasterParams(Params):
    """Mirror of RasterParams in csrc/raster.cu."""

    _fields_ = [
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("ids", ctypes.c_void_p),
        ("rast", ctypes.c_void_p),
        ("rast_db", ctypes.c_void_p),
        ("grad_rast", ctypes.c_void_p),
        ("grad_db", ctypes.c_void_p),
        ("grad_pos", Accumulator),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("images", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
        ("num_tris", ctypes.c_int),
    ]


def _params(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor, **fields: object) -> RasterParams:
    images, height, width, _ = rast.shape
    return RasterParams(
        pos=pos.data_ptr(),
        tri=tri.data_ptr(),
        rast=rast.data_ptr(),
        height=height,
        width=width,
        images=images,
        verts_per_image=pos.shape[1] if pos.ndim == 3 else 0,
        num_tris=tri.shape[0],
        **fields,
    )


def _draws(fn: str, pos: torch.Tensor, tri: torch.Tensor, ranges: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """(position set, first triangle, triangle count) of every image, after the checks that read
    the data: the indices in tri (see _checks.triangles) and the ranges (on the CPU: reading them
    costs no device synchronisation)."""
    _checks.triangles(fn, tri, pos.shape[-2])
    num_tris = tri.shape[0]
    if ranges is None:
        return [(n, 0, num_tris) for n in range(pos.shape[0])]
    draws = []
    for first, count in ranges.tolist():
        if first < 0 or count < 0 or first + count > num_tris:
            raise ValueError(f"{fn}: range (first={first}, count={count}) is outside the {num_tris} triangles of tri")
        draws.append((0, first, count))
    return draws


def _rasterize(pos, tri, ranges, context, height, width, grad_db, prev_rast):
    glctx = RasterizeGLContext.from_handle(context)
    draws = _draws(_FN if prev_rast is None else "DepthPeeler", pos, tri, ranges)
    with glctx.activate():
        id_image = glctx.pipeline.draw(pos, tri, draws, height, width, prev_rast)
    rast, rast_db = _rasterize_fake(pos, tri, ranges, context, height, width, grad_db, prev_rast)
    params = _params(pos, tri, rast, ids=id_image.data_ptr(), rast_db=ptr(rast_db) if rast_db.numel() else None)
    kernels.module("raster", pos.device).launch("raster_fwd", params, rast.numel() // 4)
    return rast, rast_db


def _rasterize_fake(pos, tri, ranges, context, height, width, grad_db, prev_rast):
    n = pos.shape[0] if ranges is None else ranges.shape[0]
    db_channels = 4 if RasterizeGLContext.from_handle(context).output_db else 0
    rast = pos.new_empty(n, height, width, 4)
    return rast, pos.new_empty(n, height, width, db_channels)


def _rasterize_setup(ctx, inputs, output):
    pos, tri, _, _, _, _, grad_db, _ = inputs
    ctx.save_for_backward(pos, tri, output[0])
    ctx.grad_db = grad_db and output[1].shape[-1] > 0


def _rasterize_backward(ctx, grad_rast, grad_rast_db):
    pos, tri, rast = ctx.saved_tensors
    ops.first_order_only(_FN, grad_rast, grad_rast_db, pos)
    grad_db = grad_rast_db if ctx.grad_db else None
    return rasterize_backward(pos, tri, rast, grad_rast, grad_db), None, None, None, None, None, None, None


def _rasterize_backward_impl(pos, tri, rast, grad_rast, grad_db):
    # Kept in locals: the kernel only sees raw pointers, so the tensors must outlive the launch.
    grad_rast = grad_rast.contiguous()
    grad_db = grad_db.contiguous() if grad_db is not None else None
    mod = kernels.module("raster", pos.device)
    grad_slots, accumulator = kernels.accumulator(mod, pos.shape, pos.device)
    params = _params(pos, tri, rast, grad_rast=grad_rast.data_ptr(), grad_db=ptr(grad_db), grad_pos=accumulator)
    mod.launch("raster_grad", params, rast.numel() // 4)
    return kernels.collect(grad_slots)


rasterize_op = ops.Op(
    "rasterize",
    "(Tensor pos, Tensor tri, Tensor? ranges, int context, int height, int width, bool grad_db, "
    "Tensor? prev_rast) -> (Tensor, Tensor)",
    _rasterize,
    _rasterize_fake,
    _rasterize_setup,
    _rasterize_backward,
)
rasterize_backward = ops.Op(
    "rasterize_backward",
    "(Tensor pos, Tensor tri, Tensor rast, Tensor grad_rast, Tensor? grad_db) -> Tensor",
    _rasterize_backward_impl,
    lambda pos, tri, rast, grad_rast, grad_db: torch.empty_like(pos),
)


_ranges_warned = False


def _warn_ranges_ignored(fn: str, pos: torch.Tensor) -> None:
    """nvdiffrast ignores ranges in instanced mode; so does glrast, saying so once per process."""
    global _ranges_warned
    if not _ranges_warned:
        _ranges_warned = True
        logger.warning(
            "%s: ranges is ignored with instanced pos of shape %s (only [V, 4] pos uses ranges); "
            "this warning is shown once",
            fn,
            list(pos.shape),
        )


def _prepare(glctx: Any, pos: Any, tri: Any, resolution: Any, ranges: Any, fn: str, peel: bool = False):
    """Validate rasterize's arguments; returns (pos, tri, ranges, height, width), ranges None in
    instanced mode. peel: for DepthPeeler, whose shader reads pos and tri as GL storage buffers.
    The checks that read the data (indices in tri, ranges within tri) run in the op (_rasterize),
    which costs no graph break under torch.compile."""
    if not isinstance(glctx, RasterizeGLContext):
        raise TypeError(f"{fn}: glctx must be a RasterizeGLContext, got {type(glctx).__name__}")
    pos = _checks.tensor(fn, "pos", pos, "[N, V, 4] (instanced) or [V, 4] (with ranges)", ndims=(2, 3), last=4,
                         low_precision=True)
    tri = _checks.tensor(fn, "tri", tri, "[T, 3]", ndims=(2,), last=3, dtype=torch.int32)
    _checks.same_device(fn, pos.device, tri=tri)
    if pos.device != glctx.device:
        raise ValueError(f"{fn}: pos is on {pos.device} but the context serves {glctx.device}")
    height, width = _checks.resolution(fn, resolution, glctx.max_resolution)
    num_tris = tri.shape[0]
    if num_tris + 1 > ids.LIMIT:
        raise ValueError(f"{fn}: {num_tris} triangles exceed the id encoding's limit of {ids.LIMIT - 1}")
    for name, t in (("pos", pos), ("tri", tri)) if peel else ():
        if t.numel() * 4 > glctx.max_storage_bytes:
            raise ValueError(
                f"{fn}: {name} needs {t.numel() * 4} bytes of GL storage buffer, above this GL's limit of "
                f"{glctx.max_storage_bytes} (GL_MAX_SHADER_STORAGE_BLOCK_SIZE); peel fewer images or triangles"
            )
    if pos.ndim == 3:
        if ranges is not None:
            _warn_ranges_ignored(fn, pos)
            ranges = None
    else:
        if ranges is None:
            raise ValueError(f"{fn}: pos of shape [V, 4] needs ranges (range mode); for one image use pos[None]")
        if (
            not isinstance(ranges, torch.Tensor)
            or ranges.dtype != torch.int32
            or ranges.ndim != 2
            or ranges.shape[1] != 2
        ):
            got = _checks.describe(ranges) if isinstance(ranges, torch.Tensor) else type(ranges).__name__
            raise ValueError(f"{fn}: ranges must be an int32 tensor of shape [N, 2], got {got}")
        if ranges.device.type != "cpu":
            raise ValueError(f"{fn}: ranges must be on the CPU, got {ranges.device}")
        ranges = ranges.contiguous()
    if (pos.shape[0] if ranges is None else ranges.shape[0]) == 0:
        raise ValueError(f"{fn}: the batch is empty (N = 0)")
    return pos, tri, ranges, height, width


def rasterize(
    glctx: RasterizeGLContext,
    pos: torch.Tensor,  # [N, V, 4] or [V, 4] (range mode), float32 clip space
    tri: torch.Tensor,  # [T, 3] int32
    resolution: tuple[int, int],  # (height, width) in pixels
    ranges: torch.Tensor | None = None,  # [N, 2] int32 on the CPU: (first triangle, count); None: instanced mode
    grad_db: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize triangles; returns rast [N, H, W, 4] = (u, v, z/w, id+1) and
    rast_db [N, H, W, 4] = (du/dX, du/dY, dv/dX, dv/dY) ([N, H, W, 0] when the
    context has output_db=False). Row 0 is clip-space y = -1. (u, v, 1 - u - v)
    always lie in the triangle: where GL covers a pixel centre that the exact
    barycentrics put just outside (slivers), the negative ones are clamped to 0
    and the rest renormalised; rast_db holds the triangle's own derivatives.

    Gradients flow from (u, v) and, with grad_db, from rast_db to the x, y and
    w of pos; there are no second derivatives (a backward with create_graph=True
    that reaches rasterize raises). pos may be float16 or bfloat16 (computed in
    float32); rast and rast_db are float32 always. Indices in tri outside [0, V)
    and ranges outside tri raise a ValueError from the op (see _checks.triangles).
    See SPEC.md "rasterize".
    """
    pos, tri, ranges, height, width = _prepare(glctx, pos, tri, resolution, ranges, _FN)
    if glctx.active_peeler is not None:
        raise RuntimeError(f"{_FN}: a DepthPeeler is active on this context; finish it before calling rasterize")
    return rasterize_op(pos, tri, ranges, glctx.handle, height, width, bool(grad_db), None)


class DepthPeeler:
    """Peels surface layers front to back: `rasterize_next_layer()` returns the
    (rast, rast_db) of the next-nearest surface at each pixel. Use as a context
    manager; one peeler per context at a time."""

    def __init__(
        self,
        glctx: RasterizeGLContext,
        pos: torch.Tensor,  # [N, V, 4] or [V, 4] (range mode)
        tri: torch.Tensor,  # [T, 3] int32
        resolution: tuple[int, int],  # (height, width)
        ranges: torch.Tensor | None = None,  # [N, 2] int32 on the CPU
        grad_db: bool = True,
    ) -> None:
        fn = "DepthPeeler"
        self._args = _prepare(glctx, pos, tri, resolution, ranges, fn, peel=True)
        _draws(fn, *self._args[:3])  # the data checks now rather than at the first layer
        self.glctx = glctx
        self.grad_db = bool(grad_db)
        self._prev: torch.Tensor | None = None
        self._active = False

    def __enter__(self) -> DepthPeeler:
        if self.glctx.active_peeler is not None:
            raise RuntimeError("DepthPeeler: another DepthPeeler is already active on this context")
        self.glctx.active_peeler = self
        self._active = True
        self._prev = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self.glctx.active_peeler = None
            self._active = False

    def rasterize_next_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rast, rast_db) of the next layer, as `rasterize` returns them; empty once
        every surface has been peeled."""
        if not self._active:
            raise RuntimeError("DepthPeeler: use it as a context manager (`with DepthPeeler(...) as peeler:`)")
        pos, tri, ranges, height, width = self._args
        rast, rast_db = rasterize_op(pos, tri, ranges, self.glctx.handle, height, width, self.grad_db, self._prev)
        self._prev = rast.detach()
        return rast, rast_db
