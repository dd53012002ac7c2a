"""Property-based cases over glrast's public functions, shared by the bounded `hypothesis` suite in CI
(tests/test_fuzz.py) and the longer campaign (benchmarks/fuzz_campaign.py).

Each case is a function `case(data) -> str` registered in CASES: it draws its inputs from
hypothesis' `data`, runs glrast, checks the result and returns a label for the outcome (e.g.
"checked", "rejected ValueError"); a wrong result raises AssertionError. What "right" means:
* values and gradients against the float64 references in tests/reference/ where they apply;
  inputs a float32 rounding away from a discontinuity of the formula (a texel or level boundary,
  a coverage or silhouette decision) are recognised by evaluating the reference at inputs perturbed
  by that much, and are checked against the perturbed references instead;
* where a reference cannot say: finite outputs and gradients for finite input, no crash, and for bad
  input a TypeError/ValueError/RuntimeError whose message starts with the function's name.
Random arrays come from a seed that hypothesis draws (with the structure: sizes, modes, special
values), so cases stay cheap to generate and reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import reference as ref
import torch
from hypothesis import strategies as st

import glrast as dr
from glrast import camera, mesh

BIG = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, BIG, -BIG, 1e38, -3e38, 1e-38, TINY, -TINY, 1e-42, 1e30, -1e30]
CLEAR_ERRORS = (TypeError, ValueError, RuntimeError)

CASES: dict[str, Callable] = {}
_context: dr.RasterizeGLContext | None = None


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def glctx() -> dr.RasterizeGLContext:
    """One CPU context for every case (created on first use, on the thread that runs the cases)."""
    global _context
    if _context is None:
        _context = dr.RasterizeGLContext(device="cpu")
    return _context


def rng(data) -> np.random.Generator:
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def sprinkle(data, x: np.ndarray, label: str) -> np.ndarray:
    """x with a few entries replaced by special finite values (float limits, denormals, zeros)."""
    count = data.draw(st.integers(1, 3), label=f"{label} specials") if data.draw(st.booleans(), label=label) else 0
    flat = x.reshape(-1)
    for _ in range(count if flat.size else 0):
        k = data.draw(st.integers(0, flat.size - 1), label=f"{label} index")
        flat[k] = data.draw(st.sampled_from(SPECIAL), label=f"{label} value")
    return x


def f32(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


def finite(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def assert_finite(what: str, *tensors: torch.Tensor | None) -> None:
    for k, t in enumerate(tensors):
        assert t is None or bool(torch.isfinite(t).all()), f"{what}: non-finite values in output {k} for finite input"


def close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str, rel_to: float | None = None) -> None:
    """max |got - want| <= tol * (1 + scale), scale = max |want| (or rel_to)."""
    got, want = got.detach().double(), want.detach().double()
    if not got.numel():
        return
    err = (got - want).abs().max().item()
    scale = want.abs().max().item() if rel_to is None else rel_to
    assert err <= tol * (1 + scale), f"{what}: max abs error {err:.3g} > {tol:g} * (1 + {scale:.3g})"


def saturated(grad: torch.Tensor) -> torch.Tensor:
    """A float64 reference gradient as glrast returns it: beyond float32's range, the largest float."""
    return grad.clamp(-BIG, BIG)


def grads(out: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True, materialize_grads=True))


# ---------------------------------------------------------------------------
# Scenes


def draw_scene(data, max_tris: int = 6, max_images: int = 2):
    """(pos [N, V, 4], tri [T, 3], kind): random triangles in front of the camera (z/w in (-0.9, 0.9),
    so that no near/far clipping happens), some slivers or sub-pixel triangles, vertices shared or not,
    all coordinates optionally scaled by a power of two (homogeneous: the same image)."""
    g = rng(data)
    n = data.draw(st.integers(1, max_images), label="images")
    t = data.draw(st.integers(1, max_tris), label="triangles")
    kind = data.draw(st.sampled_from(["random", "sliver", "small", "shared"]), label="kind")
    if kind == "shared":  # a strip: neighbours share edges
        v = t + 2
        xy = g.uniform(-1.1, 1.1, (n, v, 2))
        tri = np.array([[k, k + 1, k + 2] for k in range(t)], np.int32)
    else:
        v = 3 * t
        xy = g.uniform(-1.1, 1.1, (n, v, 2))
        tri = np.arange(v, dtype=np.int32).reshape(t, 3)
        if kind == "sliver":
            s = g.uniform(0, 1, (n, t, 1))
            width = data.draw(st.sampled_from([1e-5, 1e-3, 2e-2]), label="sliver width")
            xy[:, 2::3] = s * xy[:, 0::3] + (1 - s) * xy[:, 1::3] + g.normal(0, width, (n, t, 2))
        elif kind == "small":
            xy[:, 1::3] = xy[:, 0::3] + g.normal(0, 0.06, (n, t, 2))
            xy[:, 2::3] = xy[:, 0::3] + g.normal(0, 0.06, (n, t, 2))
    w = g.uniform(0.5, 3.0, (n, v, 1))
    z = g.uniform(-0.85, 0.85, (n, v, 1))
    pos = np.concatenate([xy * w, z * w, w], -1)
    exponent = data.draw(st.sampled_from([0, 0, 0, -100, -40, 40, 100, 125]), label="scale 2^k")
    return f32(np.ldexp(pos, exponent)), torch.as_tensor(tri), kind


def covered_margin(pos: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, H, W] distance in pixels from each pixel centre to the nearest edge of the triangle it shows
    (negative outside it), inf for empty pixels."""
    out = torch.full(ids.shape, math.inf, dtype=torch.float64)
    for img in range(ids.shape[0]):
        for t in ids[img].unique().tolist():
            if t < 0:
                continue
            inside, margin = ref.inside_triangle(pos[img][tri[t].long()], h, w)
            sel = ids[img] == t
            out[img][sel] = torch.where(inside, margin, -margin)[sel]
    return out


# ---------------------------------------------------------------------------
# rasterize


@case("rasterize")
def rasterize_case(data) -> str:
    pos, tri, kind = draw_scene(data)
    h, w = (data.draw(st.one_of(st.integers(1, 4), st.integers(8, 32)), label=k) for k in ("H", "W"))
    pos_in = pos.clone().requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx(), pos_in, tri, (h, w))
    assert_finite("rasterize", rast, rast_db)
    ids = dr.triangle_index(rast.detach())
    assert ((ids >= -1) & (ids < tri.shape[0])).all()
    cov = ids >= 0
    u, v = rast[..., 0].detach(), rast[..., 1].detach()
    assert (u[cov] >= 0).all() and (v[cov] >= 0).all() and ((u + v)[cov] <= 1 + 1e-6).all(), "outside"
    assert (rast.detach()[~cov] == 0).all()
    # z/w lies between the vertices' (all w > 0 here)
    zw = pos[..., 2].double() / pos[..., 3].double()
    corners = tri.long()[ids.clamp(min=0)]
    zs = torch.stack([torch.gather(zw, 1, corners[..., k].view(zw.shape[0], -1)).view(ids.shape) for k in range(3)])
    z = rast[..., 2].detach().double()
    assert (z[cov] >= zs.min(0).values[cov] - 1e-6).all() and (z[cov] <= zs.max(0).values[cov] + 1e-6).all()
    # coverage: a covered centre lies in its triangle up to GL's snapping (1/256 px), and a centre
    # well inside some triangle is covered
    margin = covered_margin(pos, tri, ids, h, w)
    assert (margin[cov] > -1 / 64).all(), f"a pixel centre {-margin[cov].min().item():.3g} px outside its triangle"
    for img in range(pos.shape[0]):
        for t in range(tri.shape[0]):
            inside, m = ref.inside_triangle(pos[img][tri[t].long()], h, w)
            assert cov[img][inside & (m > 1 / 64)].all(), "a pixel centre inside a triangle is not covered"
    # values and gradients against the reference solve
    g = rng(data)
    g_rast = f32(g.normal(size=rast.shape))
    g_db = f32(g.normal(size=rast_db.shape))
    pos64 = pos.double().requires_grad_(True)
    uv, db = ref.barycentrics(pos64, tri, ids, pos.shape[1])
    close(rast.detach()[..., :2], uv, 2e-5, "rasterize (u, v)")
    db_scale = db.detach().abs().max().item()
    close(rast_db.detach(), db, 1e-4, "rasterize rast_db", rel_to=db_scale)
    (grad,) = torch.autograd.grad((rast * g_rast).sum() + (rast_db * g_db).sum(), pos_in)
    assert_finite("rasterize gradient", grad)
    (grad_ref,) = torch.autograd.grad((uv * g_rast[..., :2]).sum() + (db * g_db).sum(), pos64)
    grad_ref = saturated(grad_ref)
    close(grad, grad_ref, 1e-3, "rasterize gradient", rel_to=grad_ref.abs().max().item())
    return f"checked ({kind})" if cov.any() else f"empty ({kind})"


@case("DepthPeeler")
def depth_peeler_case(data) -> str:
    pos, tri, kind = draw_scene(data, max_tris=4, max_images=1)
    h, w = data.draw(st.integers(4, 16), label="H"), data.draw(st.integers(4, 16), label="W")
    layers = []
    with dr.DepthPeeler(glctx(), pos, tri, (h, w)) as peeler:
        for _ in range(tri.shape[0] + 1):
            rast, rast_db = peeler.rasterize_next_layer()
            assert_finite("DepthPeeler", rast, rast_db)
            layers.append(rast)
    first, _ = dr.rasterize(glctx(), pos, tri, (h, w))
    assert torch.equal(layers[0], first), "the first layer differs from rasterize"
    assert not (layers[-1][..., 3] > 0).any(), "more layers than triangles"
    for prev, nxt in zip(layers, layers[1:]):
        on = nxt[..., 3] > 0
        assert (prev[..., 3][on] > 0).all(), "a pixel empty in one layer is covered in the next"
        assert (nxt[..., 2][on] >= prev[..., 2][on] - 1e-6).all(), "a later layer is nearer"
    return f"{sum(bool((x[..., 3] > 0).any()) for x in layers)} layers"


# ---------------------------------------------------------------------------
# interpolate


@case("interpolate")
def interpolate_case(data) -> str:
    g = rng(data)
    forged = data.draw(st.booleans(), label="forged rast")
    if forged:  # rast is data: any ids (beyond tri too), any barycentrics
        n, h, w = (data.draw(st.integers(1, 6), label=k) for k in ("N", "H", "W"))
        num_tris = data.draw(st.integers(1, 5), label="T")
        v = data.draw(st.integers(3, 8), label="V")
        tri = torch.as_tensor(g.integers(0, v, (num_tris, 3)), dtype=torch.int32)
        rast = np.zeros((n, h, w, 4), np.float32)
        rast[..., :2] = sprinkle(data, g.uniform(-0.5, 1.5, (n, h, w, 2)), "uv")
        rast[..., 3] = g.integers(0, num_tris + 3, (n, h, w))
        rast, rast_db = f32(rast), f32(sprinkle(data, g.normal(size=(n, h, w, 4)), "db"))
    else:
        pos, tri, _ = draw_scene(data)
        n, v = pos.shape[:2]
        rast, rast_db = dr.rasterize(glctx(), pos, tri, (data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16))))
    a = data.draw(st.integers(1, 4), label="A")
    batch = data.draw(st.sampled_from(["shared", "one", "per image"]), label="attr batch")
    shape = {"shared": (v, a), "one": (1, v, a), "per image": (n, v, a)}[batch]
    attr = f32(sprinkle(data, g.normal(size=shape), "attr") if data.draw(st.booleans()) else g.normal(size=shape))
    diff = data.draw(st.one_of(st.none(), st.just("all"), st.lists(st.integers(0, a - 1), max_size=3)), label="diff")
    inputs = [attr.requires_grad_(True), rast.clone().requires_grad_(True), rast_db.clone().requires_grad_(True)]
    out, out_da = dr.interpolate(inputs[0], inputs[1], tri, inputs[2], diff_attrs=diff)
    w_out = f32(g.normal(size=out.shape))
    w_da = f32(g.normal(size=out_da.shape))
    got = torch.autograd.grad((out * w_out).sum() + (out_da * w_da).sum(), inputs, allow_unused=True,
                              materialize_grads=True)  # fmt: skip
    assert_finite("interpolate", out, out_da, *got)
    ids = dr.triangle_index(rast)
    ids = torch.where(ids < tri.shape[0], ids, -1)
    diff_idx = None if diff is None or diff == [] else (list(range(a)) if diff == "all" else diff)
    ref_in = [attr.detach().double().requires_grad_(True), rast[..., :2].double().requires_grad_(True),
              rast_db.double().requires_grad_(True)]  # fmt: skip
    want, want_da = ref.interpolate(ref_in[0], ref_in[1], ref_in[2], tri, ids, diff_idx)
    scale = attr.abs().max().item() * (1 + rast[..., :2].abs().max().item()) * (1 + rast_db.abs().max().item())
    if scale > 1e36:  # products beyond float's range: the float32 results saturate; finite checks only
        return "float limit (finite checks)"
    close(out, want, 1e-5, "interpolate out", rel_to=scale)
    if want_da is not None:
        close(out_da, want_da, 1e-5, "interpolate out_da", rel_to=scale)
    loss_ref = (want * w_out).sum() + ((want_da * w_da).sum() if want_da is not None else 0)
    want_g = torch.autograd.grad(loss_ref, ref_in, allow_unused=True, materialize_grads=True)
    for name, gk, wk in zip(("attr", "rast", "rast_db"), got, want_g):
        gk = gk[..., :2] if name == "rast" else gk
        close(gk, wk, 1e-5, f"interpolate gradient to {name}", rel_to=scale)
    return "forged rast" if forged else "rasterized"


# ---------------------------------------------------------------------------
# texture


def _ref_texture(tex, uv, uv_da, bias, **kw):
    return ref.texture(tex.double(), uv.double(), None if uv_da is None else uv_da.double(),
                       None if bias is None else bias.double(), **kw)  # fmt: skip


@case("texture")
def texture_case(data) -> str:
    g = rng(data)
    boundary = data.draw(st.sampled_from(["wrap", "clamp", "zero", "cube"]), label="boundary")
    filt = data.draw(st.sampled_from(["nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"]))
    cube = boundary == "cube"
    n = data.draw(st.integers(1, 2), label="N")
    h, w = data.draw(st.integers(1, 5), label="H"), data.draw(st.integers(1, 5), label="W")
    c = data.draw(st.integers(1, 3), label="C")
    side = 2 ** data.draw(st.integers(0, 3), label="log2 side")
    tex_shape = (n, 6, side, side, c) if cube else (n, side, 2 ** data.draw(st.integers(0, 3)), c)
    tex = f32(sprinkle(data, g.uniform(-1, 1, tex_shape), "tex"))
    if cube:
        uv = g.normal(size=(n, h, w, 3))
        da = g.normal(0, 0.3, (n, h, w, 6))
    else:
        uv = g.uniform(-1.5, 2.5, (n, h, w, 2))
        da = g.normal(0, 0.3, (n, h, w, 4))
    da = da * 10.0 ** g.uniform(-3, 2, da.shape[:-1] + (1,))  # footprints over many levels
    uv, da = f32(sprinkle(data, uv, "uv")), f32(sprinkle(data, da, "uv_da"))
    mipmapped = filt.startswith("linear-mipmap")
    use_da = mipmapped and data.draw(st.booleans(), label="uv_da")
    bias = f32(g.normal(0, 1.5, (n, h, w))) if mipmapped and (not use_da or data.draw(st.booleans())) else None
    da = da if use_da else None
    kw = dict(filter_mode=filt, boundary_mode=boundary)
    if mipmapped and data.draw(st.booleans(), label="capped"):
        kw["max_mip_level"] = data.draw(st.integers(0, 3))
    inputs = {"tex": tex, "uv": uv, "uv_da": da, "bias": bias}
    live = {k: x.clone().requires_grad_(True) for k, x in inputs.items() if x is not None}
    out = dr.texture(live["tex"], live["uv"], live.get("uv_da"), live.get("bias"), **kw)
    weight = f32(g.normal(size=out.shape))
    got = dict(zip(live, grads(out, list(live.values()), weight)))
    if finite(*inputs.values()):
        assert_finite("texture", out, *got.values())
    # The reference at the inputs and at inputs perturbed by a few float32 roundings: pixels where
    # these disagree sit on a discontinuity of the formula; the kernel must match one of them there,
    # and gradients are compared where they agree.
    perturbations = [{}]  # in float64, so that perturbing a value near the float limit stays finite
    for scale in (1 + 3e-7, 1 - 3e-7):
        perturbations.append({"uv": uv.double() * scale})
        perturbations.append({"uv": uv.double() + (scale - 1)})
        if da is not None:
            perturbations.append({"uv_da": da.double() * (1 + (scale - 1) * 30)})
        if bias is not None:
            perturbations.append({"bias": bias.double() + (scale - 1) * 30})
    outs, uv_grads = [], []
    for change in perturbations:
        args = {k: (change.get(k, x).double().requires_grad_(k == "uv") if x is not None else None)
                for k, x in inputs.items()}  # fmt: skip
        o = _ref_texture(args["tex"], args["uv"], args["uv_da"], args["bias"], **kw)
        gu = torch.zeros_like(args["uv"])
        if o.requires_grad:  # 'nearest' does not reach uv
            (gu,) = torch.autograd.grad((o * weight).sum(), args["uv"], allow_unused=True, materialize_grads=True)
        outs.append(o.detach())
        uv_grads.append(gu)
    outs, uv_grads = torch.stack(outs), torch.stack(uv_grads)
    tol = 1e-5 * (1 + tex.abs().max().item())
    spread = (outs - outs[0]).abs().amax(-1).amax(0)
    g_spread = (uv_grads - uv_grads[0]).abs().amax(-1).amax(0)
    g_scale = 1 + uv_grads[0].abs().max().item()
    stable = (spread <= tol) & (g_spread <= 1e-3 * g_scale)
    err = (out.detach().double()[None] - outs).abs().amax(-1)  # [perturbation, N, H, W]
    assert (err.min(0).values <= tol).all(), f"texture values: error {err.min(0).values.max().item():.3g} > {tol:.3g}"
    # gradients on the stable pixels (the weight vanishes elsewhere)
    mask = stable[..., None].to(weight.dtype)
    live = {k: x.detach().clone().requires_grad_(True) for k, x in inputs.items() if x is not None}
    out = dr.texture(live["tex"], live["uv"], live.get("uv_da"), live.get("bias"), **kw)
    got = dict(zip(live, grads(out, list(live.values()), weight * mask)))
    ref_live = {k: x.double().requires_grad_(True) for k, x in inputs.items() if x is not None}
    want_out = _ref_texture(ref_live["tex"], ref_live["uv"], ref_live.get("uv_da"), ref_live.get("bias"), **kw)
    want = dict(zip(ref_live, grads(want_out, list(ref_live.values()), (weight * mask).double())))
    for name in live:
        gk, wk = got[name], saturated(want[name])
        close(gk, wk, 2e-4, f"texture gradient to {name}", rel_to=wk.abs().max().item())
    return f"{filt}, {boundary}" + ("" if bool(stable.all()) else " (discontinuity)")


@case("texture_construct_mip")
def construct_mip_case(data) -> str:
    g = rng(data)
    cube = data.draw(st.booleans(), label="cube")
    h = data.draw(st.integers(1, 9), label="h")
    w = h if cube else data.draw(st.integers(1, 9), label="w")
    shape = (data.draw(st.integers(1, 2)), *((6,) if cube else ()), h, w, data.draw(st.integers(1, 3)))
    tex = f32(sprinkle(data, g.uniform(-1, 1, shape), "tex"))
    cap = data.draw(st.one_of(st.none(), st.integers(0, 4)), label="max_mip_level")
    try:
        mip = dr.texture_construct_mip(tex, max_mip_level=cap, cube_mode=cube)
    except ValueError as e:
        assert str(e).startswith("texture_construct_mip:") and "max_mip_level" in str(e)
        sides = [(h >> k, w >> k) for k in range(cap + 1 if cap is not None else 8)]
        assert any((a > 1 and a % 2) or (b > 1 and b % 2) for a, b in sides if a or b), "a valid size was refused"
        return "rejected odd side"
    levels = ref.construct_mip(tex.double(), cap, cube=cube)
    assert len(mip.levels) == len(levels)
    for got, want in zip(mip.levels, levels):
        assert_finite("texture_construct_mip", got)
        # means of texels near the float limit cancel: the error bound is relative to the input
        close(got, want, 1e-6, "texture_construct_mip level", rel_to=tex.abs().max().item())
    return f"{len(levels)} levels"


# ---------------------------------------------------------------------------
# antialias


def draw_antialias_scene(data):
    """A small scene for antialias: a grid mesh (shared vertices: interior edges and silhouettes),
    random or sub-pixel triangles in front, and a backdrop."""
    g = rng(data)
    n = data.draw(st.integers(1, 2), label="images")
    k = data.draw(st.integers(1, 3), label="grid")
    gx, gy = np.meshgrid(np.linspace(-0.7, 0.7, k + 1), np.linspace(-0.7, 0.7, k + 1))
    grid = np.stack([gx, gy], -1).reshape(-1, 2)
    corner = [r * (k + 1) + c for r in range(k) for c in range(k)]
    quads = [(q, q + 1, q + k + 1) for q in corner] + [(q + 1, q + k + 2, q + k + 1) for q in corner]
    tris = [np.array(quads, np.int32)]
    pos = []
    for _ in range(n):
        xy = grid + g.normal(0, 0.05, grid.shape)
        pos.append(np.concatenate([xy, g.uniform(-0.2, 0.2, (len(grid), 1)), np.ones((len(grid), 1))], -1))
    pos = np.stack(pos)
    extra = data.draw(st.integers(0, 3), label="extra triangles")
    small = data.draw(st.booleans(), label="sub-pixel")
    for _ in range(extra):
        base = pos.shape[1]
        centre = g.uniform(-0.8, 0.8, (n, 1, 2))
        xy = centre + g.normal(0, 0.04 if small else 0.5, (n, 3, 2))
        p = np.concatenate([xy, g.uniform(-0.8, -0.3, (n, 3, 1)), np.ones((n, 3, 1))], -1)
        pos = np.concatenate([pos, p], 1)
        tris.append(np.array([[base, base + 1, base + 2]], np.int32))
    backdrop = np.array([[-3, -3, 0.9, 1], [4, -3, 0.9, 1], [0, 4, 0.9, 1]], np.float64)
    if data.draw(st.booleans(), label="backdrop"):
        base = pos.shape[1]
        pos = np.concatenate([pos, np.broadcast_to(backdrop, (n, 3, 4))], 1)
        tris.append(np.array([[base, base + 1, base + 2]], np.int32))
    w = g.uniform(0.7, 2.0, (n, pos.shape[1], 1))
    return f32(pos * w), torch.as_tensor(np.concatenate(tris))


@case("antialias")
def antialias_case(data) -> str:
    g = rng(data)
    pos, tri = draw_antialias_scene(data)
    h, w = data.draw(st.integers(2, 12), label="H"), data.draw(st.integers(2, 12), label="W")
    rast, _ = dr.rasterize(glctx(), pos, tri, (h, w))
    c = data.draw(st.integers(1, 3), label="C")
    extreme = data.draw(st.booleans(), label="extreme colours")
    color = g.uniform(-1, 1, rast.shape[:3] + (c,))
    if extreme:
        color = np.where(g.uniform(size=color.shape) < 0.5, -BIG, BIG) * g.uniform(0.5, 1, color.shape)
    color = f32(color)
    boost = data.draw(st.sampled_from([1.0, 2.5, 0.0]), label="boost")
    inputs = [color.clone().requires_grad_(True), pos.clone().requires_grad_(True)]
    out = dr.antialias(inputs[0], rast, inputs[1], tri, pos_gradient_boost=boost)
    weight = f32(g.normal(size=out.shape))
    got = grads(out, inputs, weight)
    assert_finite("antialias", out, *got)
    # a convex combination of each pixel's and its four neighbours' colours
    padded_lo = torch.nn.functional.max_pool2d(-color.permute(0, 3, 1, 2), 3, 1, 1).neg().permute(0, 2, 3, 1)
    padded_hi = torch.nn.functional.max_pool2d(color.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    assert (out.detach() >= padded_lo).all() and (out.detach() <= padded_hi).all(), "outside the colour range"
    if extreme:
        return "extreme colours (finite, in range)"
    ref_in = [color.double().requires_grad_(True), pos.double().requires_grad_(True)]
    want = ref.antialias(ref_in[0], rast, ref_in[1], tri, pos_gradient_boost=boost)
    want_g = grads(want, ref_in, weight.double())
    # decisions (which edge, which side of 45 degrees, whether a neighbour folds) taken in float32 may
    # differ from float64 within a rounding of their thresholds: the reference with pos perturbed
    # by a few roundings must then disagree with itself too
    err = (out.detach().double() - want.detach()).abs().max().item()
    if err > 2e-5:
        shaken = pos.double() * (1 + 1e-6 * torch.as_tensor(g.normal(size=pos.shape)))
        again = ref.antialias(color.double(), rast, shaken, tri, pos_gradient_boost=boost)
        assert (again - want).abs().max().item() > 2e-5 * 0.5, f"antialias values: max abs error {err:.3g}"
        return "decision boundary"
    close(got[0], want_g[0], 2e-5, "antialias gradient to color")
    want_pos = saturated(want_g[1])
    close(got[1], want_pos, 1e-3, "antialias gradient to pos", rel_to=want_pos.abs().max().item())
    changed = bool((want.detach() != color.double()).any())
    return "checked (blends)" if changed else "checked (no silhouette)"


@case("antialias_construct_topology_hash")
def topology_hash_case(data) -> str:
    g = rng(data)
    v = data.draw(st.integers(1, 8), label="V")
    t = data.draw(st.one_of(st.just(0), st.integers(1, 12)), label="T")
    tri = torch.as_tensor(g.integers(0, v, (t, 3)), dtype=torch.int32)  # degenerate and repeated triangles too
    topo = dr.antialias_construct_topology_hash(tri)
    keys = topo.keys[topo.keys >= 0].tolist()
    want = ref.edge_triangles(tri)
    assert sorted(set(keys)) == sorted((lo << 32) | hi for lo, hi in want), "edges missing from the hash"
    assert len(keys) == sum(len(x) for x in want.values()), "entries per (edge, triangle)"
    if t:
        pos = f32(np.concatenate([g.uniform(-1, 1, (1, v, 2)), np.zeros((1, v, 1)), np.ones((1, v, 1))], -1))
        rast, _ = dr.rasterize(glctx(), pos, tri, (6, 6))
        color = f32(g.uniform(size=(1, 6, 6, 2)))
        assert torch.equal(dr.antialias(color, rast, pos, tri, topology_hash=topo), dr.antialias(color, rast, pos, tri))
    return f"{len(want)} edges"


# ---------------------------------------------------------------------------
# small public helpers


@case("triangle_index")
def triangle_index_case(data) -> str:
    ids = data.draw(st.lists(st.integers(-1, 0x34FFFFFF - 2), min_size=1, max_size=20), label="ids")
    rast = torch.zeros(len(ids), 4)
    rast[:, 3] = torch.tensor([0.0 if k < 0 else ref.encode_triangle_id(k) for k in ids], dtype=torch.float32)
    assert dr.triangle_index(rast).tolist() == ids
    return "round trip"


@case("camera")
def camera_case(data) -> str:
    g = rng(data)
    fovy = data.draw(st.floats(1.0, 170.0), label="fovy")
    width, height = data.draw(st.integers(1, 4096), label="width"), data.draw(st.integers(1, 4096), label="height")
    near = data.draw(st.floats(1e-3, 10.0), label="near")
    far = near * data.draw(st.floats(1.5, 1e4), label="far / near")
    eye = g.normal(size=3) * 5
    target = eye + g.normal(size=3)
    proj = camera.perspective(fovy, width / height, near, far).double()
    try:
        view = camera.look_at(eye.tolist(), target.tolist(), g.normal(size=3).tolist())
    except ValueError as e:
        assert str(e).startswith("look_at:")
        return "rejected look_at"
    mtx = proj @ view.double()
    K, R, t, n_, f_ = camera.to_opencv(mtx, width, height, flip_y=True)
    back = camera.from_opencv(K, R, t, width, height, float(n_), float(f_), flip_y=True).double()
    close(back / back[3, :3].norm(), mtx / mtx[3, :3].norm(), 1e-6, "camera round trip")
    return "round trip"


@case("vertex_normals")
def vertex_normals_case(data) -> str:
    g = rng(data)
    v = data.draw(st.integers(3, 10), label="V")
    pos = f32(sprinkle(data, g.normal(size=(v, 3)), "pos")).requires_grad_(True)
    tri = torch.as_tensor(g.integers(0, v, (data.draw(st.integers(1, 12)), 3)), dtype=torch.int32)
    normals = mesh.vertex_normals(pos, tri)
    (grad,) = torch.autograd.grad((normals * f32(g.normal(size=normals.shape))).sum(), pos)
    assert_finite("vertex_normals", normals, grad)
    lengths = normals.detach().norm(dim=-1)
    assert (lengths <= 1 + 1e-4).all(), "normals longer than 1"
    return "finite"


# ---------------------------------------------------------------------------
# Bad input: a clear exception naming the function, never a crash or another exception type


def _junk(data, label: str):
    kind = data.draw(st.sampled_from(["none", "int", "float", "str", "list", "tensor", "bool"]), label=label)
    if kind == "tensor":
        ndim = data.draw(st.integers(0, 5), label=f"{label} ndim")
        shape = tuple(data.draw(st.integers(0, 4), label=f"{label} dim") for _ in range(ndim))
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64, torch.int32, torch.int64, torch.bool]))
        device = data.draw(st.sampled_from(["cpu", "cpu", "meta"]), label=f"{label} device")
        return torch.zeros(shape, dtype=dtype, device=device)
    return {"none": None, "int": data.draw(st.integers(-3, 5)), "float": data.draw(st.floats(allow_nan=True)),
            "str": data.draw(st.sampled_from(["", "all", "cpu", "linear", "x"])), "list": [[0, 1, 2]],
            "bool": True}[kind]  # fmt: skip


_BAD_CALLS = {
    "rasterize": lambda a: dr.rasterize(glctx(), a[0], a[1], a[2], a[3]),
    "interpolate": lambda a: dr.interpolate(a[0], a[1], a[2], a[3], a[4]),
    "texture": lambda a: dr.texture(a[0], a[1], a[2], a[3], filter_mode="auto" if a[4] is None else a[4],
                                    boundary_mode="wrap" if a[5] is None else a[5]),
    "texture_construct_mip": lambda a: dr.texture_construct_mip(a[0], a[1]),
    "antialias": lambda a: dr.antialias(a[0], a[1], a[2], a[3], a[4]),
    "antialias_construct_topology_hash": lambda a: dr.antialias_construct_topology_hash(a[0]),
    "RasterizeGLContext": lambda a: dr.RasterizeGLContext(device=a[0]).release(),
    "DepthPeeler": lambda a: dr.DepthPeeler(glctx(), a[0], a[1], a[2], a[3]),
    "triangle_index": lambda a: dr.triangle_index(a[0]),
}


@case("bad input")
def bad_input_case(data) -> str:
    name = data.draw(st.sampled_from(sorted(_BAD_CALLS)), label="function")
    args = [_junk(data, f"arg {k}") for k in range(6)]
    try:
        _BAD_CALLS[name](args)
    except CLEAR_ERRORS as e:
        assert str(e).startswith(f"{name}:"), f"{name}: the message does not name the function: {e}"
        return f"{name}: {type(e).__name__}"
    return f"{name}: accepted"
