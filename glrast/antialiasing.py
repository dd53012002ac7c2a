"""antialias: analytic antialiasing of silhouette edges, the source of coverage gradients.

Pixel coordinates follow SPEC.md: a vertex (x, y, z, w) lies at
px = (x/w + 1)/2 · W, py = (y/w + 1)/2 · H, pixel (row i, column j) has its
centre at (j + 0.5, i + 0.5), row 0 is clip-space y = -1.

The formula, for every pair of pixels adjacent along a row (axis 0) or a
column (axis 1) of one image:

1. If both pixels show the same triangle id (or both are empty), nothing happens.
2. The *owner* is the pixel whose triangle is nearer: the covered one against
   an empty pixel, else the one with the smaller z/w (the first of the pair,
   left or lower, on a tie). Its triangle is t, its centre P, the neighbour's
   centre Q, and s = ±1 the direction from P to Q along the axis.
3. Starting in t, the segment P→Q is followed across the mesh: it leaves the
   current triangle through the edge whose line it crosses first from the
   triangle's side to the outside (the entry edge excluded, for triangles
   after t). If the surface continues across that edge (another triangle
   sharing both of its vertex indices, found through the topology hash, has
   its third vertex strictly on the other side of the edge's line in screen
   space), the walk goes on in that triangle: the one Q shows if it is among
   them (the two pixels then see one surface and nothing happens), else the
   smallest such id. The first edge where the surface does not continue (it
   ends, or folds behind) is the *silhouette edge*; dc ∈ [0, 1] is where the
   segment crosses its line, as a fraction of the way from P to Q: with a, b
   its end points in pixels, cross(b - a, P + dc·s·e_axis - a) = 0. GL
   decides coverage with its own snapped arithmetic, so crossings up to 1/16
   of the segment outside the expected range count, with dc clamped to
   [0, 1]. If the segment ends inside a triangle, or after 64 triangles
   without a silhouette, nothing happens. (When t itself holds the silhouette
   edge, as with triangles larger than pixels, this is simply "the edge of t
   that the segment crosses"; the walk finds the silhouettes of dense meshes,
   whose outline triangles are thinner than a pixel and cover no pixel centre.)
4. The silhouette edge is skipped when it runs more along the pair than
   across it: for a pair along x when |b.x - a.x| > |b.y - a.y|, for a pair
   along y when |b.y - a.y| > |b.x - a.x|.
5. With amount = |0.5 - dc|: if dc < 0.5, the owner's pixel is blended towards
   the neighbour's colour, out[P] += amount · (color[Q] - color[P]); otherwise
   the neighbour's pixel is blended towards the owner's,
   out[Q] += amount · (color[P] - color[Q]).

6. A pixel collects the amounts a_k of all (up to four) pairs that blend it,
   each towards its neighbour n_k, all computed from the input colours:
   out[P] = color[P] + sum_k a_k (color[n_k] - color[P]) / max(1, sum_k a_k).
   The amounts are scaled down only where they add up past 1 (a pixel under a
   triangle smaller than a pixel can be blended by three or four pairs), so
   the output is always a convex combination of the input colours; it is
   computed as a weighted sum, kept within the range of the colours it mixes. For a straight
edge that crosses the squares of a pair along x through their top and bottom
sides (likewise along y), this is exactly the box-filtered coverage of the two
pixels: the pixel holding the crossing keeps 0.5 + d of its own surface, d the
distance from its centre to the crossing. The image is continuous in the
vertex positions as the edge sweeps across pixel centres: at dc = 0 the pair
blends the owner half-way, exactly what the next pair (where that pixel is the
neighbour, dc = 1) gives once the edge passes its centre; and when the
triangle covering a pixel centre changes, the walk still meets the same
silhouette edge. The output is discontinuous only where the decisions of steps
3 and 4 change: an edge turning through 45 degrees, a neighbouring triangle
folding over an edge.

Gradients: color gets the transpose of the blend; pos gets
d(loss)/d(amount) · d(amount)/d(dc) · pos_gradient_boost, carried through dc
to the x, y and w of the silhouette edge's two vertices (z has no effect on dc).
The gradient is zero where dc reaches 0 or 1 (clamped), where the blend saturates;
where a pixel's amounts are scaled (step 6), it follows the scaled formula. A
gradient whose true value lies beyond float32's range (colours near the float
limit) saturates at the largest finite float.
Lines and sides are computed in homogeneous pixel coordinates, which keeps
them right for triangles with a vertex behind the camera (w < 0, clipped by
GL): "the side of a line" is where the triangle's visible part lies.

Implementation (csrc/antialias.cu): the topology hash maps every undirected
edge to its triangles (one hash entry per (edge, triangle), inserted with an
atomic compare-and-swap). One kernel thread per pixel pair decides the pair
and records (amount, direction, silhouette edge); the blend and the colour
gradient gather each pixel's records, so every output is written by one
thread and the result is deterministic; the position gradient scatters
through the kernel runtime's accumulator (per-thread copies on the CPU,
atomics on CUDA).
"""

from __future__ import annotations

import ctypes
import math

import torch

from . import _checks, kernels, ops
from .params import Accumulator, Params, ptr

_FN = "antialias"
_FN_HASH = "antialias_construct_topology_hash"


class HashParams(Params):
    """Mirror of HashParams in csrc/antialias.cu."""

    _fields_ = [
        ("tri", ctypes.c_void_p),
        ("keys", ctypes.c_void_p),
        ("tris", ctypes.c_void_p),
        ("mask", ctypes.c_longlong),
    ]


class AntialiasParams(Params):
    """Mirror of AntialiasParams in csrc/antialias.cu."""

    _fields_ = [
        ("color", ctypes.c_void_p),
        ("rast", ctypes.c_void_p),
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("keys", ctypes.c_void_p),
        ("tris", ctypes.c_void_p),
        ("alpha", ctypes.c_void_p),
        ("edge", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("grad_out", ctypes.c_void_p),
        ("grad_color", ctypes.c_void_p),
        ("grad_pos", Accumulator),
        ("mask", ctypes.c_longlong),
        ("num_tris", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("channels", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
        ("pos_gradient_boost", ctypes.c_float),
    ]


class TopologyHash:
    """The edge -> triangles table of one `tri`, from `antialias_construct_topology_hash`.

    Pass it as `antialias(..., topology_hash=...)` while `tri` stays the same;
    antialias checks that it was built from an equal `tri`."""

    def __init__(self, tri: torch.Tensor, keys: torch.Tensor, tris: torch.Tensor):
        self.tri = tri  # a private copy, to recognise the tri it belongs to
        self.keys = keys  # [capacity] int64 edge keys (-1: empty slot)
        self.tris = tris  # [capacity] int32 triangle of each entry

    @property
    def capacity(self) -> int:
        return self.keys.numel()

    def __repr__(self) -> str:
        return f"TopologyHash(triangles={self.tri.shape[0]}, capacity={self.capacity}, device={self.keys.device})"


def _capacity(num_tris: int) -> int:
    # One entry per (edge, triangle): 3 T entries, kept at most half the capacity so probe chains stay short.
    return 1 << max(6, (6 * num_tris - 1).bit_length())


def _antialias_hash(tri):
    capacity = _capacity(tri.shape[0])
    keys = tri.new_full((capacity,), -1, dtype=torch.int64)
    tris = tri.new_full((capacity,), -1)  # empty slots hold -1 too, so that equal builds give equal tensors
    params = HashParams(tri=tri.data_ptr(), keys=keys.data_ptr(), tris=tris.data_ptr(), mask=keys.numel() - 1)
    kernels.module("antialias", tri.device).launch("antialias_hash_build", params, tri.shape[0])
    return keys, tris


def _antialias_hash_fake(tri):
    capacity = _capacity(int(tri.shape[0]))  # a size from the triangle count: specialised under torch.compile
    return tri.new_empty(capacity, dtype=torch.int64), tri.new_empty(capacity)


antialias_hash = ops.Op(
    "antialias_hash", "(Tensor tri) -> (Tensor, Tensor)", _antialias_hash, _antialias_hash_fake
)


def antialias_construct_topology_hash(tri: torch.Tensor) -> TopologyHash:  # tri: [T, 3] int32
    """Build the topology hash of `tri` once, for reuse by `antialias` while `tri` stays the same."""
    tri = _checks.tensor(_FN_HASH, "tri", tri, "[T, 3]", ndims=(2,), last=3, dtype=torch.int32)
    lo = int(tri.min()) if tri.numel() else 0
    if lo < 0:
        raise ValueError(f"{_FN_HASH}: tri holds vertex index {lo}; indices must be >= 0")
    return TopologyHash(tri.clone(), *antialias_hash(tri))


def _params(color, rast, pos, tri, keys, tris, boost: float, **fields) -> AntialiasParams:
    n, h, w, c = color.shape
    return AntialiasParams(
        color=color.data_ptr(),
        rast=ptr(rast),
        pos=pos.data_ptr(),
        tri=tri.data_ptr(),
        keys=keys.data_ptr(),
        tris=tris.data_ptr(),
        mask=keys.numel() - 1,
        num_tris=tri.shape[0],
        height=h,
        width=w,
        channels=c,
        verts_per_image=pos.shape[1] if pos.ndim == 3 else 0,
        pos_gradient_boost=boost,
        **fields,
    )


def _other_tri(hash_tri: torch.Tensor, tri: torch.Tensor) -> ValueError:
    return ValueError(
        f"{_FN}: topology_hash was built for a different tri ({hash_tri.shape[0]} triangles; "
        f"tri has {tri.shape[0]}, or its indices changed); rebuild it with antialias_construct_topology_hash(tri)"
    )


def _antialias(color, rast, pos, tri, hash_tri, keys, tris, boost):
    """hash_tri: the tri the hash (keys, tris) was built from (tri itself for a hash built now).
    Returns the image and the records of the pairs' decisions, which the backward reads."""
    _checks.triangles(_FN, tri, pos.shape[-2])
    if hash_tri is not tri and not _checks.equal(hash_tri, tri):
        raise _other_tri(hash_tri, tri)
    out, alpha, edge = _antialias_fake(color, rast, pos, tri, hash_tri, keys, tris, boost)
    pointers = {"alpha": alpha.data_ptr(), "edge": edge.data_ptr(), "out": out.data_ptr()}
    params = _params(color, rast, pos, tri, keys, tris, boost, **pointers)
    mod = kernels.module("antialias", color.device)
    n, h, w, _ = color.shape
    mod.launch("antialias_pairs", params, 2 * n * h * w)
    mod.launch("antialias_blend", params, n * h * w)
    return out, alpha, edge


def _antialias_fake(color, rast, pos, tri, hash_tri, keys, tris, boost):
    n, h, w, _ = color.shape
    return torch.empty_like(color), color.new_empty(n, h, w, 2), color.new_empty(n, h, w, 2, 2, dtype=torch.int32)


def _antialias_setup(ctx, inputs, output):
    color, _, pos, tri, _, keys, tris, ctx.boost = inputs
    _, alpha, edge = output
    ctx.mark_non_differentiable(alpha, edge)
    ctx.set_materialize_grads(False)  # the records get no gradients: no zeros made for them
    ctx.save_for_backward(color, pos, tri, keys, tris, alpha, edge)


def _antialias_backward(ctx, grad_out, _grad_alpha, _grad_edge):
    if grad_out is None:
        return (None,) * 8
    color, pos, tri, keys, tris, alpha, edge = ctx.saved_tensors
    ops.first_order_only(_FN, grad_out, color, pos)
    want_color, _, want_pos = ctx.needs_input_grad[:3]
    grad_color, grad_pos = antialias_backward(
        color, pos, tri, keys, tris, alpha, edge, grad_out, ctx.boost, want_color, want_pos
    )
    return grad_color if want_color else None, None, grad_pos if want_pos else None, None, None, None, None, None


def _antialias_backward_impl(color, pos, tri, keys, tris, alpha, edge, grad_out, boost, want_color, want_pos):
    n, h, w, _ = color.shape
    mod = kernels.module("antialias", color.device)
    grad_color = torch.empty_like(color) if want_color else ops.absent(color)
    pos_slots, pos_acc = kernels.accumulator(mod, pos.shape, pos.device) if want_pos else (None, Accumulator())
    grad_out = grad_out.contiguous()  # kept referenced: the kernel reads it through a raw pointer
    params = _params(
        color, None, pos, tri, keys, tris, boost,  # the records stand for rast
        alpha=alpha.data_ptr(), edge=edge.data_ptr(), grad_out=grad_out.data_ptr(),
        grad_color=ptr(grad_color) if want_color else None, grad_pos=pos_acc,
    )  # fmt: skip
    if want_color:
        mod.launch("antialias_grad_color", params, n * h * w)
    if want_pos:
        mod.launch("antialias_grad_pos", params, 2 * n * h * w)
    return grad_color, kernels.collect(pos_slots) if want_pos else ops.absent(pos)


def _antialias_backward_fake(color, pos, tri, keys, tris, alpha, edge, grad_out, boost, want_color, want_pos):
    return torch.empty_like(color) if want_color else color.new_empty(0), (
        torch.empty_like(pos) if want_pos else pos.new_empty(0)
    )


antialias_op = ops.Op(
    "antialias",
    "(Tensor color, Tensor rast, Tensor pos, Tensor tri, Tensor hash_tri, Tensor keys, Tensor tris, float boost) "
    "-> (Tensor, Tensor, Tensor)",
    _antialias,
    _antialias_fake,
    _antialias_setup,
    _antialias_backward,
)
antialias_backward = ops.Op(
    "antialias_backward",
    "(Tensor color, Tensor pos, Tensor tri, Tensor keys, Tensor tris, Tensor alpha, Tensor edge, Tensor grad_out, "
    "float boost, bool want_color, bool want_pos) -> (Tensor, Tensor)",
    _antialias_backward_impl,
    _antialias_backward_fake,
)


def _topology(topology_hash: object, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the tri the hash was built from, keys, tris); whether that tri equals `tri` is checked in the op."""
    if topology_hash is None:
        return (tri, *antialias_hash(tri))
    if not isinstance(topology_hash, TopologyHash):
        raise TypeError(
            f"{_FN}: topology_hash must come from antialias_construct_topology_hash(tri), "
            f"got {type(topology_hash).__name__}"
        )
    _checks.same_device(_FN, tri.device, topology_hash=topology_hash.keys)
    if topology_hash.tri.shape != tri.shape:
        raise _other_tri(topology_hash.tri, tri)
    return topology_hash.tri, topology_hash.keys, topology_hash.tris


def antialias(
    color: torch.Tensor,  # [N, H, W, C]
    rast: torch.Tensor,  # [N, H, W, 4] from rasterize
    pos: torch.Tensor,  # [N, V, 4] (instanced) or [V, 4] (range mode), clip space
    tri: torch.Tensor,  # [T, 3] int32
    topology_hash: TopologyHash | None = None,  # from antialias_construct_topology_hash(tri)
    pos_gradient_boost: float = 1.0,
) -> torch.Tensor:
    """Antialias silhouette edges: returns [N, H, W, C], `color` blended across
    the silhouette edges found in `rast` (see the module docstring for the exact
    formula). Pixels away from silhouettes keep their exact input values.

    Gradients flow to color and to the x, y, w of pos (scaled by
    pos_gradient_boost); rast gets none. Without topology_hash the hash is built
    on every call; build it once with antialias_construct_topology_hash(tri)
    while tri stays the same. There are no second derivatives (a backward with
    create_graph=True that reaches antialias raises). color and pos may be
    float16 or bfloat16: computed in float32, the result in color's dtype.
    """
    dtype = color.dtype if isinstance(color, torch.Tensor) else None
    color = _checks.tensor(_FN, "color", color, "[N, H, W, C]", ndims=(4,), low_precision=True)
    rast = _checks.tensor(_FN, "rast", rast, "[N, H, W, 4]", ndims=(4,), last=4)
    pos = _checks.tensor(_FN, "pos", pos, "[N, V, 4] (instanced) or [V, 4] (range mode)", ndims=(2, 3), last=4,
                         low_precision=True)
    tri = _checks.tensor(_FN, "tri", tri, "[T, 3]", ndims=(2,), last=3, dtype=torch.int32)
    _checks.same_device(_FN, color.device, rast=rast, pos=pos, tri=tri)
    if rast.shape[:3] != color.shape[:3]:
        raise ValueError(
            f"{_FN}: color and rast must agree in [N, H, W]; got color {_checks.describe(color)} "
            f"and rast {_checks.describe(rast)}"
        )
    if pos.ndim == 3 and pos.shape[0] != color.shape[0]:
        raise ValueError(
            f"{_FN}: in instanced mode pos must hold one position set per image: got {pos.shape[0]} "
            f"for {color.shape[0]} images (pos {_checks.describe(pos)})"
        )
    try:
        boost = float(pos_gradient_boost)
    except (TypeError, ValueError):
        raise TypeError(f"{_FN}: pos_gradient_boost must be a number, got {pos_gradient_boost!r}") from None
    if not math.isfinite(boost):
        raise ValueError(f"{_FN}: pos_gradient_boost must be finite, got {boost}")
    hash_tri, keys, tris = _topology(topology_hash, tri)
    out = antialias_op(color, rast, pos, tri, hash_tri, keys, tris, boost)[0]
    return out if dtype is torch.float32 else out.to(dtype)
