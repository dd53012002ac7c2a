"""texture and texture_construct_mip: filtered texture lookups with mipmaps.

2D textures are [N, h, w, C]; (s, t) = (0, 0) is the outer corner of texel
``tex[:, 0, 0]`` and (1, 1) the opposite corner, s runs along the width and t
along the height, and texel (row y, column x) has its centre at
((x + 0.5) / w, (y + 0.5) / h).

Cube maps are [N, 6, s, s, C] with the faces in OpenGL's order +X, -X, +Y,
-Y, +Z, -Z. A direction (x, y, z) picks the face of its largest |component|
(ties go to x, then y) and is looked up there at
s = (sc / |ma| + 1) / 2 (along the face's width) and t = (tc / |ma| + 1) / 2
(along its height), with OpenGL's per-face (sc, tc, ma):

====  ====  ====  ====
face   sc    tc    ma
====  ====  ====  ====
+X     -z    -y    x
-X     +z    -y    x
+Y     +x    +z    y
-Y     +x    -z    y
+Z     +x    -y    z
-Z     -x    -y    z
====  ====  ====  ====

So on +X, column 0 is the +z side and row 0 the +y side. Bilinear taps
that fall off a face continue on the adjacent face, and the tap beyond a cube
corner (where only three texels meet) is the mean of the other three, so
filtering is continuous across edges and corners. A zero or non-finite
direction returns 0 and gets no gradient (non-finite 2D coordinates likewise).

Mip level k has sides max(1, w >> k) x max(1, h >> k), each texel the mean of
the 2x2 (or 2x1) block below it; cube faces are filtered independently. All
computing (pyramid, lookups, gradients) runs in the kernels of
csrc/texture.cu; gradients reach tex through the pyramid.
"""

from __future__ import annotations

import ctypes
import functools
import math
import operator
from collections.abc import Sequence

import torch

from . import _checks, kernels, ops
from .params import Accumulator, Params, expect_constants, ptr

_FN = "texture"
_FN_MIP = "texture_construct_mip"
_MIP_FILTERS = ("linear-mipmap-nearest", "linear-mipmap-linear")
_FILTERS = {"nearest": 0, "linear": 1, "linear-mipmap-nearest": 2, "linear-mipmap-linear": 3}
_BOUNDARIES = {"wrap": 0, "clamp": 1, "zero": 2, "cube": 3}
MAX_LEVELS = 32  # sides below 2^31 need at most 32 levels
_C_NAMES = {
    "nearest": "FILTER_NEAREST",
    "linear": "FILTER_LINEAR",
    "linear-mipmap-nearest": "FILTER_MIP_NEAREST",
    "linear-mipmap-linear": "FILTER_MIP_LINEAR",
    "wrap": "BOUNDARY_WRAP",
    "clamp": "BOUNDARY_CLAMP",
    "zero": "BOUNDARY_ZERO",
    "cube": "BOUNDARY_CUBE",
}
expect_constants(
    "texture",
    "texture_modes",
    {**{_C_NAMES[k]: v for k, v in {**_FILTERS, **_BOUNDARIES}.items()}, "TEX_MAX_LEVELS": MAX_LEVELS},
)


class TextureParams(Params):
    """Mirror of TextureParams in csrc/texture.cu."""

    _fields_ = [
        ("tex", ctypes.c_void_p),
        ("pyr", ctypes.c_void_p),
        ("uv", ctypes.c_void_p),
        ("uv_da", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("grad_out", ctypes.c_void_p),
        ("grad_tex", Accumulator),
        ("grad_pyr", Accumulator),
        ("grad_uv", ctypes.c_void_p),
        ("grad_uv_da", ctypes.c_void_p),
        ("grad_bias", ctypes.c_void_p),
        ("level_offset", ctypes.c_longlong * MAX_LEVELS),
        ("pixels_per_image", ctypes.c_longlong),
        ("image_width", ctypes.c_int),
        ("tex_batch", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("channels", ctypes.c_int),
        ("last_level", ctypes.c_int),
        ("filter", ctypes.c_int),
        ("boundary", ctypes.c_int),
    ]


class MipParams(Params):
    """Mirror of MipParams in csrc/texture.cu."""

    _fields_ = [
        ("fine", ctypes.c_void_p),
        ("coarse", ctypes.c_void_p),
        ("fh", ctypes.c_int),
        ("fw", ctypes.c_int),
        ("ch", ctypes.c_int),
        ("cw", ctypes.c_int),
        ("channels", ctypes.c_int),
    ]


# ---------------------------------------------------------------------------
# The mip pyramid: levels 1..last packed one after another in one flat tensor.


def _level_shapes(fn: str, tex_shape: Sequence[int], max_mip_level: int | None, strict: bool) -> list[tuple]:
    """Shapes of levels 1..last for a texture of `tex_shape` ([N, h, w, C] or
    [N, 6, s, s, C]), down to 1x1 or `max_mip_level`. With `strict`, halving an
    odd side > 1 is an error (the pyramid glrast builds itself must average
    whole blocks)."""
    *lead, h, w, c = tex_shape
    sizes = [(h, w)]
    while sizes[-1] != (1, 1) and (max_mip_level is None or len(sizes) <= max_mip_level):
        fh, fw = sizes[-1]
        if strict and ((fh > 1 and fh % 2) or (fw > 1 and fw % 2)):
            chain = " -> ".join(f"{a}x{b}" for a, b in sizes)
            k = len(sizes) - 1
            raise ValueError(
                f"{fn}: cannot build mip level {k + 1}: level {k} is {fh}x{fw} (height x width) and a side > 1 "
                f"must be even to be halved (levels so far: {chain}); pass max_mip_level={k} to stop the "
                "pyramid there, or use a texture whose sides are powers of two"
            )
        sizes.append((max(1, fh // 2), max(1, fw // 2)))
    return [(*lead, a, b, c) for a, b in sizes[1:]]


def _offsets(shapes: Sequence[tuple]) -> list[int]:
    """Start of every level in the packed pyramid, indexed by level (entry 0 unused) and one past the end."""
    starts = [0, 0]
    for shape in shapes:
        starts.append(starts[-1] + math.prod(shape))
    return starts


def _mip_params(fine: torch.Tensor, coarse: torch.Tensor, fine_shape: tuple, coarse_shape: tuple) -> MipParams:
    return MipParams(
        fine=fine.data_ptr(),
        coarse=coarse.data_ptr(),
        fh=fine_shape[-3],
        fw=fine_shape[-2],
        ch=coarse_shape[-3],
        cw=coarse_shape[-2],
        channels=fine_shape[-1],
    )


def _texels(shape: tuple) -> int:
    """Texels of a level (all images and faces): one mip kernel thread each."""
    return math.prod(shape[:-1])


def _level_view(base: torch.Tensor, packed: torch.Tensor, shapes: Sequence[tuple], k: int) -> torch.Tensor:
    """Level k (0: `base`) of a pyramid whose levels 1.. are packed in `packed`."""
    if k == 0:
        return base
    starts = _offsets(shapes)
    return packed[starts[k] : starts[k + 1]]


def _mip_kernel(kernel: str, base: torch.Tensor, packed: torch.Tensor, shapes: Sequence[tuple], levels) -> None:
    """Run mip_down or mip_down_grad between each level k in `levels` and the level below it."""
    mod = kernels.module("texture", base.device)
    all_shapes = [tuple(base.shape), *shapes]
    for k in levels:
        fine = _level_view(base, packed, shapes, k - 1)
        coarse = _level_view(base, packed, shapes, k)
        mod.launch(kernel, _mip_params(fine, coarse, all_shapes[k - 1], all_shapes[k]), _texels(all_shapes[k]))


def _shapes(tex_shape: tuple, levels: int) -> tuple:
    """Shapes of levels 1..levels of a texture of `tex_shape`, as `_level_shapes` gives them (the
    caller checked that the texture has that many); symbolic sizes too (torch.compile's dynamic shapes)."""
    try:
        return _int_shapes(tex_shape, levels)
    except TypeError:  # a symbolic size cannot be hashed
        return _level_sizes(tex_shape, levels)


def _level_sizes(tex_shape: tuple, levels: int) -> tuple:
    *lead, h, w, c = tex_shape
    return tuple((*lead, torch.sym_max(1, h // (1 << k)), torch.sym_max(1, w // (1 << k)), c)
                 for k in range(1, levels + 1))  # fmt: skip


_int_shapes = functools.lru_cache(maxsize=256)(_level_sizes)


def _texture_mip(tex, levels):
    """Levels 1..levels of `tex`, packed, each computed from the one below."""
    packed = _texture_mip_fake(tex, levels)
    _mip_kernel("mip_down", tex, packed, _shapes(tuple(tex.shape), levels), range(1, levels + 1))
    return packed


def _texture_mip_fake(tex, levels):
    return tex.new_empty(_offsets(_shapes(tuple(tex.shape), levels))[-1])


def _texture_mip_setup(ctx, inputs, output):
    tex, ctx.levels = inputs
    ctx.tex_shape = list(tex.shape)


def _texture_mip_backward(ctx, grad_packed):
    return texture_mip_backward(grad_packed.contiguous(), ctx.tex_shape, ctx.levels), None


def _texture_mip_backward_impl(grad_packed, tex_shape, levels):
    grad_tex = grad_packed.new_zeros(tex_shape)
    _pyramid_grad_to_base(grad_tex, grad_packed.clone(), _shapes(tuple(tex_shape), levels))
    return grad_tex


def _pyramid_grad_to_base(grad_tex: torch.Tensor, grad_packed: torch.Tensor, shapes: Sequence[tuple]) -> None:
    """Add the gradients of levels last..1 into the level below, ending in grad_tex (in place)."""
    _mip_kernel("mip_down_grad", grad_tex, grad_packed, shapes, range(len(shapes), 0, -1))


texture_mip = ops.Op(
    "texture_mip", "(Tensor tex, int levels) -> Tensor", _texture_mip, _texture_mip_fake, _texture_mip_setup,
    _texture_mip_backward,
)  # fmt: skip
texture_mip_backward = ops.Op(
    "texture_mip_backward",
    "(Tensor grad_pyr, SymInt[] tex_shape, int levels) -> Tensor",
    _texture_mip_backward_impl,
    lambda grad_pyr, tex_shape, levels: grad_pyr.new_empty(tex_shape),
)


class TextureMip:
    """A prebuilt mip pyramid from `texture_construct_mip`, for passing as
    `texture(..., mip=...)` while the texture stays constant. Opaque to users;
    `levels` gives the level tensors 1..last ([N, (6,) h_k, w_k, C]) for inspection."""

    def __init__(self, tex_shape: tuple, cube: bool, packed: torch.Tensor, shapes: list[tuple]):
        self.tex_shape = tex_shape
        self.cube = cube
        self.packed = packed
        self.shapes = shapes

    @property
    def levels(self) -> list[torch.Tensor]:
        return [_level_view(self.packed, self.packed, self.shapes, k).view(s) for k, s in enumerate(self.shapes, 1)]

    def __repr__(self) -> str:
        return f"TextureMip(tex_shape={list(self.tex_shape)}, cube={self.cube}, levels={len(self.shapes)})"


# ---------------------------------------------------------------------------
# The lookup


def _params(filter: int, boundary: int, shapes: tuple, tex, pyr, uv, uv_da, bias, **fields) -> TextureParams:
    mipmapped = filter >= _FILTERS["linear-mipmap-nearest"]
    starts = _offsets(shapes)[:-1]
    return TextureParams(
        tex=tex.data_ptr(),
        pyr=ptr(pyr),
        uv=uv.data_ptr(),
        uv_da=ptr(uv_da) if mipmapped else None,
        bias=ptr(bias) if mipmapped else None,
        level_offset=(ctypes.c_longlong * MAX_LEVELS)(*starts),
        pixels_per_image=uv.shape[1] * uv.shape[2],
        image_width=uv.shape[2],
        tex_batch=tex.shape[0],
        height=tex.shape[-3],
        width=tex.shape[-2],
        channels=tex.shape[-1],
        last_level=len(shapes),
        filter=filter,
        boundary=boundary,
        **fields,
    )


# The texture op's arguments after the tensors: filter, boundary, levels (the pyramid holds levels
# 1..levels) and through_tex (the pyramid is a function of tex: its gradient flows on into tex).


def _texture(tex, pyr, uv, uv_da, bias, filter, boundary, levels, through_tex):
    out = _texture_fake(tex, pyr, uv, uv_da, bias, filter, boundary, levels, through_tex)
    params = _params(filter, boundary, _shapes(tuple(tex.shape), levels), tex, pyr, uv, uv_da, bias, out=out.data_ptr())
    kernels.module("texture", tex.device).launch("texture_fwd", params, _pixels(uv))
    return out


def _pixels(uv: torch.Tensor) -> int:
    """The lookups: one per pixel of uv [N, H, W, 2 or 3] (cheaper than a view's numel)."""
    n, h, w, _ = uv.shape
    return n * h * w


def _texture_fake(tex, pyr, uv, uv_da, bias, filter, boundary, levels, through_tex):
    n, h, w, _ = uv.shape
    return tex.new_empty(n, h, w, tex.shape[-1])


def _texture_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:5])
    ctx.args = inputs[5:]


def _texture_backward(ctx, grad_out):
    tex, pyr, uv, uv_da, bias = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:5])
    g_tex, g_pyr, g_uv, g_da, g_bias = texture_backward(tex, pyr, uv, uv_da, bias, grad_out, *ctx.args, needs)
    need_tex, need_pyr, need_uv, need_da, need_bias = needs
    return (g_tex if need_tex else None, g_pyr if need_pyr else None, g_uv if need_uv else None,
            g_da if need_da else None, g_bias if need_bias else None, None, None, None, None)  # fmt: skip


def _texture_backward_impl(tex, pyr, uv, uv_da, bias, grad_out, filter, boundary, levels, through_tex, needs):
    need_tex, need_pyr, need_uv, need_da, need_bias = needs
    mod = kernels.module("texture", tex.device)
    shapes = _shapes(tuple(tex.shape), levels)
    tex_slots, tex_acc = kernels.accumulator(mod, tex.shape, tex.device) if need_tex else (None, Accumulator())
    want_pyr = levels > 0 and (need_pyr or (need_tex and through_tex))
    pyr_slots, pyr_acc = (None, Accumulator())
    if want_pyr:
        pyr_slots, pyr_acc = kernels.accumulator(mod, (_offsets(shapes)[-1],), tex.device)
    grad_uv = torch.empty_like(uv) if need_uv else ops.absent(uv)
    grad_da = torch.empty_like(uv_da) if need_da else ops.absent(uv)
    grad_bias = torch.empty_like(bias) if need_bias else ops.absent(uv)
    grad_out = grad_out.contiguous()  # kept referenced: the kernel reads it through a raw pointer
    params = _params(
        filter, boundary, shapes, tex, pyr, uv, uv_da, bias,
        grad_out=grad_out.data_ptr(), grad_tex=tex_acc, grad_pyr=pyr_acc, grad_uv=ptr(grad_uv) if need_uv else None,
        grad_uv_da=ptr(grad_da) if need_da else None, grad_bias=ptr(grad_bias) if need_bias else None,
    )  # fmt: skip
    mod.launch("texture_bwd", params, _pixels(uv))
    grad_tex = kernels.collect(tex_slots) if need_tex else ops.absent(tex)
    grad_pyr = kernels.collect(pyr_slots) if want_pyr else None
    if through_tex and need_tex and grad_pyr is not None:
        _pyramid_grad_to_base(grad_tex, grad_pyr, shapes)
        kernels.saturate(grad_tex)  # collect saturated both; the sums of the pyramid's gradients may not be
    # a prebuilt or internal pyramid: its gradient went on into tex
    return grad_tex, grad_pyr if need_pyr else ops.absent(tex), grad_uv, grad_da, grad_bias


def _texture_backward_fake(tex, pyr, uv, uv_da, bias, grad_out, filter, boundary, levels, through_tex, needs):
    wanted = zip(needs, (tex, pyr, uv, uv_da, bias), (tex, tex, uv, uv, uv))
    return tuple(torch.empty_like(t) if need else like.new_empty(0) for need, t, like in wanted)


def _double_setup(ctx, inputs, output):
    tex, pyr, uv, uv_da, bias = inputs[:5]
    ctx.save_for_backward(uv, uv_da, bias)
    ctx.args = inputs[6:10]
    ctx.tex_shape, ctx.pyr_size = tex.shape, 0 if pyr is None else pyr.numel()
    ctx.set_materialize_grads(False)


def _double_backward(ctx, gg_tex, gg_pyr, gg_uv, gg_da, gg_bias):
    """texture's backward is linear in grad_out, and (grad_tex, grad_pyr) is its image under the
    transpose of texture's map from (tex, pyramid), which is linear: that transpose's own transpose
    is texture again, with the pyramid built from gg_tex where it is a function of tex."""
    uv, uv_da, bias = ctx.saved_tensors
    filter, boundary, levels, through_tex = ctx.args
    gg_tex, gg_pyr, gg_uv, gg_da, gg_bias = (
        g.contiguous() if g is not None and g.numel() else None for g in (gg_tex, gg_pyr, gg_uv, gg_da, gg_bias)
    )  # cotangents may be expanded or strided; an absent output's (ops.absent) has no elements
    mipmapped = filter >= _FILTERS["linear-mipmap-nearest"]
    needs = ctx.needs_input_grad
    through_coords = (needs[2] and filter != _FILTERS["nearest"]) or (mipmapped and (needs[3] or needs[4]))
    if gg_uv is not None or gg_da is not None or gg_bias is not None or through_coords:
        raise ops.higher_order_error(_FN, " with respect to uv, uv_da and mip_level_bias (only tex has them)")
    if gg_tex is None and gg_pyr is None:
        return (None,) * 11
    gg_tex = uv.new_zeros(ctx.tex_shape) if gg_tex is None else gg_tex
    if through_tex:
        pyr = texture_mip(gg_tex.detach(), levels) if levels else None
    else:
        pyr = uv.new_zeros(ctx.pyr_size) if gg_pyr is None else gg_pyr
    out = texture_op(gg_tex, pyr, uv, uv_da, bias, filter, boundary, levels, through_tex)
    return None, None, None, None, None, out, None, None, None, None, None


texture_op = ops.Op(
    "texture",
    "(Tensor tex, Tensor? pyr, Tensor uv, Tensor? uv_da, Tensor? bias, int filter, int boundary, int levels, "
    "bool through_tex) -> Tensor",
    _texture,
    _texture_fake,
    _texture_setup,
    _texture_backward,
)
texture_backward = ops.Op(
    "texture_backward",
    "(Tensor tex, Tensor? pyr, Tensor uv, Tensor? uv_da, Tensor? bias, Tensor grad_out, int filter, int boundary, "
    "int levels, bool through_tex, bool[] needs) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _texture_backward_impl,
    _texture_backward_fake,
    _double_setup,
    _double_backward,
)


def _choice(fn: str, name: str, value: object, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def _max_level(fn: str, max_mip_level: object) -> int | None:
    if max_mip_level is None:
        return None
    try:
        level = operator.index(max_mip_level)  # ints and integer scalars such as numpy.int64
    except TypeError:
        level = None
    if level is None or isinstance(max_mip_level, bool):
        raise TypeError(f"{fn}: max_mip_level must be None or an int >= 0, got {max_mip_level!r}")
    if level < 0:
        raise ValueError(f"{fn}: max_mip_level must be >= 0, got {level}")
    return level


def _check_tex(fn: str, tex: object, cube: bool) -> torch.Tensor:
    """tex as [N, h, w, C] or, for cube maps, [N, 6, s, s, C] with every side >= 1."""
    expected = "[N, 6, s, s, C] (cube map)" if cube else "[N, h, w, C]"
    tex = _checks.tensor(fn, "tex", tex, expected, ndims=(4, 5), low_precision=True)
    if tex.ndim == 5 and not cube:
        raise ValueError(
            f"{fn}: tex {_checks.describe(tex)} looks like a cube map [N, 6, s, s, C]; "
            "cube maps require boundary_mode='cube' (texture) or cube_mode=True (texture_construct_mip)"
        )
    if cube and (tex.ndim != 5 or tex.shape[1] != 6 or tex.shape[2] != tex.shape[3]):
        raise ValueError(
            f"{fn}: a cube map tex must have shape [N, 6, s, s, C] (six square faces), got {_checks.describe(tex)}"
        )
    if min(tex.shape) < 1:
        raise ValueError(f"{fn}: tex must have every dimension >= 1, got {_checks.describe(tex)}")
    return tex


def texture_construct_mip(
    tex: torch.Tensor,  # [N, h, w, C] or [N, 6, s, s, C] with cube_mode
    max_mip_level: int | None = None,  # highest level built (None: down to 1x1)
    cube_mode: bool = False,
) -> TextureMip:
    """Build the mip pyramid of `tex` once, for reuse in `texture(..., mip=...)`
    while the texture stays constant. Level k has sides max(1, w >> k) x
    max(1, h >> k), each texel the mean of the 2x2 (or 2x1) block below it;
    halving an odd side > 1 is an error that suggests `max_mip_level`. Gradients
    of lookups still reach tex through the prebuilt pyramid."""
    max_mip_level = _max_level(_FN_MIP, max_mip_level)
    tex = _check_tex(_FN_MIP, tex, bool(cube_mode))
    shapes = _level_shapes(_FN_MIP, tex.shape, max_mip_level, strict=True)
    return TextureMip(tuple(tex.shape), bool(cube_mode), texture_mip(tex.detach(), len(shapes)), shapes)


def _pyramid(tex, mip, cube: bool, max_mip_level: int | None) -> tuple[torch.Tensor | None, list[tuple], bool]:
    """(packed levels, shapes of the levels used, whether the levels depend on tex) for a mipmapped lookup."""
    if mip is None:
        shapes = _level_shapes(_FN, tex.shape, max_mip_level, strict=True)
        return texture_mip(tex.detach(), len(shapes)), shapes, True
    if isinstance(mip, TextureMip):
        if mip.tex_shape != tuple(tex.shape) or mip.cube != cube:
            raise ValueError(
                f"{_FN}: mip was built for a {'cube map' if mip.cube else 'texture'} of shape {list(mip.tex_shape)}, "
                f"but tex is a {'cube map' if cube else 'texture'} of shape {list(tex.shape)}; rebuild it with "
                "texture_construct_mip(tex)"
            )
        _checks.same_device(_FN, tex.device, mip=mip.packed)
        shapes = mip.shapes if max_mip_level is None else mip.shapes[:max_mip_level]
        return mip.packed, shapes, True
    if isinstance(mip, torch.Tensor) or not isinstance(mip, Sequence):
        raise TypeError(
            f"{_FN}: mip must be a TextureMip from texture_construct_mip or a list of level tensors, "
            f"got {type(mip).__name__}"
        )
    expected = _level_shapes(_FN, tex.shape, None, strict=False)
    if len(mip) > len(expected):
        raise ValueError(
            f"{_FN}: mip holds {len(mip)} levels, but a texture of shape {list(tex.shape)} has only "
            f"{len(expected)} levels below the base"
        )
    levels = []
    for k, level in enumerate(mip):
        want = expected[k]
        level = _checks.tensor(_FN, f"mip[{k}]", level, f"{list(want)} (mip level {k + 1})", ndims=(len(want),),
                               low_precision=True)
        if tuple(level.shape) != want:
            raise ValueError(
                f"{_FN}: mip[{k}] (mip level {k + 1}) must have shape {list(want)}, got {_checks.describe(level)}"
            )
        _checks.same_device(_FN, tex.device, **{f"mip[{k}]": level})
        levels.append(level)
    if max_mip_level is not None:
        levels = levels[:max_mip_level]
    if not levels:
        return None, [], False
    return torch.cat([level.reshape(-1) for level in levels]), expected[: len(levels)], False


def texture(
    tex: torch.Tensor,  # [N, h, w, C] or [N, 6, s, s, C] (cube map); N = 1 broadcasts
    uv: torch.Tensor,  # [N, H, W, 2] (s, t) or [N, H, W, 3] (cube: a direction)
    uv_da: torch.Tensor | None = None,  # [N, H, W, 4] (ds/dX, ds/dY, dt/dX, dt/dY) or [N, H, W, 6] (cube)
    mip_level_bias: torch.Tensor | None = None,  # [N, H, W]
    mip: TextureMip | Sequence[torch.Tensor] | None = None,  # prebuilt pyramid or custom levels 1..
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    max_mip_level: int | None = None,  # highest mip level used
) -> torch.Tensor:
    """Sample `tex` at `uv`; returns [N, H, W, C].

    filter_mode: 'nearest', 'linear' (bilinear), 'linear-mipmap-nearest'
    (bilinear in level floor(level)), 'linear-mipmap-linear' (trilinear), or
    'auto' (trilinear when uv_da or mip_level_bias is given, else linear).
    The level is 0.5 log2(lambda) + mip_level_bias, lambda the larger eigenvalue
    of J^T J for J the Jacobian of the level-0 texel coordinates by screen
    X, Y (from uv_da), clamped to [0, last level]; without uv_da the level is
    mip_level_bias itself. boundary_mode: 'wrap', 'clamp' (to the edge texel
    centres), 'zero' (zeros outside) or 'cube' (see the module docstring for
    the face layout).

    mip: a TextureMip from texture_construct_mip (reused as is; tex still gets
    gradients through it) or a list of level tensors 1.. ([N, (6,) h_k, w_k, C])
    that receive their own gradients. Without it mipmapped modes build the
    pyramid on every call. Gradients flow to tex, uv (not for 'nearest'),
    uv_da and mip_level_bias; second derivatives exist through tex (and custom
    levels), where texture is linear, and not through uv, uv_da or
    mip_level_bias (create_graph=True there raises). Float inputs may be float16
    or bfloat16: computed in float32, the result comes back in tex's dtype.
    """
    filter_mode = _choice(_FN, "filter_mode", filter_mode, ("auto", *_FILTERS))
    boundary_mode = _choice(_FN, "boundary_mode", boundary_mode, tuple(_BOUNDARIES))
    cube = boundary_mode == "cube"
    max_mip_level = _max_level(_FN, max_mip_level)
    dtype = tex.dtype if isinstance(tex, torch.Tensor) else None
    tex = _check_tex(_FN, tex, cube)
    dims = 3 if cube else 2
    uv = _checks.tensor(
        _FN, "uv", uv, f"[N, H, W, {dims}]" + (" (cube: directions)" if cube else ""), ndims=(4,), last=dims,
        low_precision=True,
    )
    n, h, w = uv.shape[:3]
    if tex.shape[0] not in (1, n):
        raise ValueError(f"{_FN}: tex has {tex.shape[0]} textures for a batch of {n} images (expected 1 or {n})")
    if uv_da is not None:
        da_dims = 2 * dims
        uv_da = _checks.tensor(_FN, "uv_da", uv_da, f"[N, H, W, {da_dims}]", ndims=(4,), last=da_dims,
                               low_precision=True)
        if uv_da.shape[:3] != uv.shape[:3]:
            raise ValueError(
                f"{_FN}: uv_da must have shape {[n, h, w, da_dims]} to match uv, got {_checks.describe(uv_da)}"
            )
    if mip_level_bias is not None:
        mip_level_bias = _checks.tensor(
            _FN, "mip_level_bias", mip_level_bias, "[N, H, W]", ndims=(3,), low_precision=True
        )
        if mip_level_bias.shape != uv.shape[:3]:
            raise ValueError(
                f"{_FN}: mip_level_bias must have shape {[n, h, w]} to match uv, got {_checks.describe(mip_level_bias)}"
            )
    _checks.same_device(_FN, tex.device, uv=uv, uv_da=uv_da, mip_level_bias=mip_level_bias)

    if filter_mode == "auto":
        lod_given = uv_da is not None or mip_level_bias is not None
        filter_mode = "linear-mipmap-linear" if lod_given else "linear"
    pyr, shapes, through_tex = None, [], False
    if filter_mode in _MIP_FILTERS:
        if uv_da is None and mip_level_bias is None:
            raise ValueError(
                f"{_FN}: filter_mode={filter_mode!r} needs uv_da or mip_level_bias to choose the mip level"
            )
        pyr, shapes, through_tex = _pyramid(tex, mip, cube, max_mip_level)
    filter, boundary = _FILTERS[filter_mode], _BOUNDARIES[boundary_mode]
    out = texture_op(tex, pyr, uv, uv_da, mip_level_bias, filter, boundary, len(shapes), through_tex)
    return out if dtype is torch.float32 else out.to(dtype)
