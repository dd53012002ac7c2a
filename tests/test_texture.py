"""texture and texture_construct_mip: values and gradients against the plain-torch
reference, known answers, finite differences, degenerate inputs and validation."""

import math

import numpy as np
import pytest
import reference as ref
import torch

import glrast as dr

FILTERS = ["nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear"]
MIP_FILTERS = FILTERS[2:]
BOUNDARIES = ["wrap", "clamp", "zero", "cube"]


def _grads(out, inputs, v):
    """d(sum(out * v)) / d inputs, zeros for inputs that do not reach out."""
    return torch.autograd.grad((out * v).sum(), inputs, allow_unused=True, materialize_grads=True)


def _close(actual, expected, tol, what):
    """max |actual - expected| <= tol * (1 + max |expected|)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    scale = 1 + (expected.abs().max().item() if expected.numel() else 0.0)
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:g} * {scale:.3g}"


def _case(cube, *, n=2, tex_batch=2, size=(16, 8), res=(6, 7), channels=3, seed=0):
    """Random tex, uv (2D: s, t in [-0.5, 1.5]; cube: directions), uv_da spreading the LOD
    over the levels, and mip_level_bias, all on the CPU."""
    g = torch.Generator().manual_seed(seed)
    if cube:
        tex = torch.rand(tex_batch, 6, size[0], size[0], channels, generator=g)
        uv = torch.randn(n, *res, 3, generator=g)
        uv_da = torch.randn(n, *res, 6, generator=g) * 0.3
    else:
        tex = torch.rand(tex_batch, *size, channels, generator=g)
        uv = torch.rand(n, *res, 2, generator=g) * 2 - 0.5
        uv_da = torch.randn(n, *res, 4, generator=g) * 0.2
    bias = torch.randn(n, *res, generator=g) * 0.5
    return tex, uv, uv_da, bias


def _compare(device, tex, uv, uv_da, bias, mip=None, tol_value=2e-6, tol_grad=2e-5, **kwargs):
    """glrast vs reference: forward values and gradients to every input (custom mip levels included)."""
    named = {"tex": tex, "uv": uv, "uv_da": uv_da, "mip_level_bias": bias}
    named.update({f"mip[{k}]": level for k, level in enumerate(mip or [])})
    named = {k: x for k, x in named.items() if x is not None}
    cpu = {k: x.clone().requires_grad_() for k, x in named.items()}
    dev = {k: x.detach().to(device).requires_grad_() for k, x in named.items()}

    def call(fn, t):
        levels = [x for k, x in t.items() if k.startswith("mip[")] if mip is not None else None
        return fn(t["tex"], t["uv"], t.get("uv_da"), t.get("mip_level_bias"), mip=levels, **kwargs)

    out, expected = call(dr.texture, dev), call(ref.texture, cpu)
    _close(out, expected, tol_value, "values")
    v = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    got = _grads(out, list(dev.values()), v.to(device))
    want = _grads(expected, list(cpu.values()), v)
    for name, g, w in zip(named, got, want):
        _close(g, w, tol_grad, f"gradient to {name}")


# ---------------------------------------------------------------------------
# Against the reference


@pytest.mark.parametrize("filter_mode", FILTERS)
@pytest.mark.parametrize("boundary_mode", BOUNDARIES)
def test_matches_reference(device, boundary_mode, filter_mode):
    cube = boundary_mode == "cube"
    tex, uv, uv_da, bias = _case(cube, size=(8, 8) if cube else (16, 8))
    _compare(device, tex, uv, uv_da, bias, filter_mode=filter_mode, boundary_mode=boundary_mode)
    if cube:  # directions within half a texel of a cube edge (free axis 0-2) or corner (3-5): taps cross faces
        g = torch.Generator().manual_seed(14)
        near = torch.sign(uv) * (1 - 0.1 * torch.rand(uv.shape, generator=g))
        free = torch.arange(uv[..., 0].numel()).view(uv.shape[:-1]) % 6  # 0-2: that axis runs along an edge
        along = torch.rand(uv.shape[:-1], generator=g) * 1.8 - 0.9
        near = torch.where(free[..., None] == torch.arange(3), along[..., None], near)
        _compare(device, tex, near, uv_da, bias, filter_mode=filter_mode, boundary_mode=boundary_mode)


@pytest.mark.parametrize("boundary_mode", ["wrap", "cube"])
def test_shared_gradient_accumulator_matches_reference(device, boundary_mode, monkeypatch):
    """With no memory for per-thread copies the texel gradients are scattered with atomics
    into one buffer (tex and the pyramid levels); they must match the reference all the same."""
    monkeypatch.setenv("GLRAST_ACCUMULATOR_MB", "0")
    tex, uv, uv_da, bias = _case(boundary_mode == "cube", size=(8, 8), seed=4)
    _compare(device, tex, uv, uv_da, bias, filter_mode="linear-mipmap-linear", boundary_mode=boundary_mode)


@pytest.mark.parametrize("boundary_mode", ["wrap", "cube"])
def test_broadcast_texture_and_lod_variants(device, boundary_mode):
    """N = 1 textures over a batch of 3; LOD from uv_da only, from the bias only, capped levels."""
    cube = boundary_mode == "cube"
    tex, uv, uv_da, bias = _case(cube, n=3, tex_batch=1, size=(8, 8), seed=2)
    _compare(device, tex, uv, uv_da, None, boundary_mode=boundary_mode)
    _compare(device, tex, uv, None, bias * 2 + 1, boundary_mode=boundary_mode)
    _compare(device, tex, uv, uv_da, bias, boundary_mode=boundary_mode, max_mip_level=1)


def test_reference_gradients_finite_differences():
    """The oracle itself: float64 gradcheck of the reference (trilinear 2D and cube)."""
    for cube in (False, True):
        tex, uv, uv_da, bias = (
            x.double() for x in _case(cube, n=1, tex_batch=1, size=(4, 4), res=(2, 3), channels=2, seed=3)
        )
        args = [x.requires_grad_() for x in (tex, uv, uv_da, bias)]
        mode = "cube" if cube else "wrap"
        assert torch.autograd.gradcheck(lambda *a, m=mode: ref.texture(*a, boundary_mode=m), args, fast_mode=True)


def test_auto_filter_mode(device):
    tex, uv, uv_da, bias = (x.to(device) for x in _case(False))
    linear = dr.texture(tex, uv, filter_mode="linear")
    assert torch.equal(dr.texture(tex, uv), linear)
    trilinear = dr.texture(tex, uv, uv_da, bias, filter_mode="linear-mipmap-linear")
    assert torch.equal(dr.texture(tex, uv, uv_da, bias), trilinear)
    # uv_da and mip_level_bias are unused (and get zero gradients) in non-mipmapped modes
    da = uv_da.clone().requires_grad_()
    out = dr.texture(tex, uv, da, filter_mode="linear")
    assert torch.equal(out, linear)
    (g,) = torch.autograd.grad(out.sum(), da)
    assert not g.any()


# ---------------------------------------------------------------------------
# Mip pyramid


@pytest.mark.parametrize(
    ("shape", "max_level", "cube"),
    [
        ((2, 16, 8, 3), None, False),
        ((1, 12, 20, 2), 2, False),
        ((1, 2, 8, 1), None, False),
        ((2, 6, 8, 8, 2), None, True),
    ],
)
def test_construct_mip_matches_reference(device, shape, max_level, cube):
    tex = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    mip = dr.texture_construct_mip(tex.to(device), max_mip_level=max_level, cube_mode=cube)
    expected = ref.construct_mip(tex.double(), max_level, cube)
    assert [tuple(x.shape) for x in mip.levels] == [tuple(x.shape) for x in expected]
    for got, want in zip(mip.levels, expected):
        _close(got, want, 1e-6, "mip level")


def test_mip_sizes_non_power_of_two(device):
    tex = torch.rand(1, 12, 20, 3, device=device)
    assert [tuple(x.shape[1:3]) for x in dr.texture_construct_mip(tex, max_mip_level=2).levels] == [(6, 10), (3, 5)]
    for call in (
        lambda: dr.texture_construct_mip(tex),
        lambda: dr.texture_construct_mip(tex, max_mip_level=3),
        lambda: dr.texture(
            tex, torch.rand(1, 2, 2, 2, device=device), mip_level_bias=torch.ones(1, 2, 2, device=device)
        ),
    ):
        with pytest.raises(ValueError, match=r"12x20 -> 6x10 -> 3x5.*max_mip_level=2"):
            call()
    uv, bias = torch.rand(1, 3, 3, 2, device=device), torch.full((1, 3, 3), 7.0, device=device)
    out = dr.texture(tex, uv, mip_level_bias=bias, max_mip_level=2)  # level clamps to 2 (3x5)
    assert torch.equal(dr.texture(tex, uv, mip_level_bias=bias, max_mip_level=np.int64(2)), out)
    level2 = tex.reshape(1, 3, 4, 5, 4, 3).mean((2, 4))
    _close(out, dr.texture(level2, uv), 1e-6, "level 2 lookup")


def test_prebuilt_mip_is_reused_and_passes_gradients(device):
    tex, uv, uv_da, bias = (x.to(device) for x in _case(False, seed=5))
    mip = dr.texture_construct_mip(tex)
    t1, t2 = tex.clone().requires_grad_(), tex.clone().requires_grad_()
    built = dr.texture(t1, uv, uv_da, bias)
    reused = dr.texture(t2, uv, uv_da, bias, mip=mip)
    assert torch.equal(built, reused)
    v = torch.randn_like(built)
    (g1,) = _grads(built, [t1], v)
    (g2,) = _grads(reused, [t2], v)
    _close(g2, g1, 1e-6, "tex gradient through the prebuilt pyramid")
    # the pyramid is used as built: a changed base shows at level 0 only
    coarse = torch.full_like(bias, 10.0)
    before = dr.texture(tex, uv, mip_level_bias=coarse, mip=mip)
    assert torch.equal(dr.texture(tex * 2, uv, mip_level_bias=coarse, mip=mip), before)
    # a cap below the pyramid's depth is honoured
    capped = dr.texture(tex, uv, mip_level_bias=coarse, mip=mip, max_mip_level=1)
    _close(capped, dr.texture(tex, uv, mip_level_bias=coarse, max_mip_level=1), 1e-6, "capped prebuilt pyramid")


@pytest.mark.parametrize("cube", [False, True])
def test_custom_mip_levels_get_own_gradients(device, cube):
    tex, uv, uv_da, bias = _case(cube, size=(8, 8), seed=6)
    g = torch.Generator().manual_seed(7)
    shape = tex.shape
    levels = [torch.rand(*shape[:-3], shape[-3] >> k, shape[-2] >> k, shape[-1], generator=g) for k in (1, 2)]
    _compare(device, tex, uv, uv_da, bias, mip=levels, boundary_mode="cube" if cube else "wrap")


# ---------------------------------------------------------------------------
# Known answers


@pytest.mark.parametrize("filter_mode", FILTERS)
def test_constant_texture(device, filter_mode):
    g = torch.Generator().manual_seed(8)
    for boundary, tex, uv in (
        ("wrap", torch.full((1, 8, 4, 2), 0.7), torch.rand(1, 5, 5, 2, generator=g) * 6 - 3),
        ("clamp", torch.full((1, 8, 4, 2), 0.7), torch.rand(1, 5, 5, 2, generator=g) * 6 - 3),
        ("zero", torch.full((1, 8, 4, 2), 0.7), torch.rand(1, 5, 5, 2, generator=g) * 0.75 + 0.125),
        ("cube", torch.full((1, 6, 4, 4, 2), 0.7), torch.randn(1, 5, 5, 3, generator=g)),
    ):
        bias = torch.rand(1, 5, 5, generator=g) * 3
        if boundary == "zero":  # coarser levels have the zero border within reach
            bias = bias - 4
        out = dr.texture(
            tex.to(device),
            uv.to(device),
            mip_level_bias=bias.to(device),
            filter_mode=filter_mode,
            boundary_mode=boundary,
        )
        _close(out, torch.full_like(out, 0.7), 1e-6, f"{boundary} constant")


def test_linear_ramp_and_boundaries(device):
    w, h = 8, 4
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = (2 * xs + 3 * ys + 1)[None, :, :, None]
    tex = ramp.to(device)

    def at(x, y, **kw):  # lookup at texel coordinates (x, y) = (s w - 0.5, t h - 0.5)
        uv = torch.tensor([[(x + 0.5) / w, (y + 0.5) / h]], dtype=torch.float32).view(1, 1, 1, 2)
        return dr.texture(tex, uv.to(device), **kw).item()

    for x, y in ((0, 0), (3, 2), (7, 3), (2.25, 1.5), (6.75, 0.5)):  # centres and between: exact bilinear
        assert at(x, y, filter_mode="linear") == pytest.approx(2 * x + 3 * y + 1, abs=1e-5)
    assert at(3, 2, filter_mode="nearest") == 2 * 3 + 3 * 2 + 1
    assert at(3.4, 1.4, filter_mode="nearest") == 2 * 3 + 3 * 1 + 1  # floor(s w) = floor(3.9), floor(t h) = floor(1.9)
    r = ramp[0, :, :, 0]
    # wrap: half a texel outside blends with the opposite edge; a whole period away is the same point
    assert at(-0.5, 1, filter_mode="linear") == pytest.approx((r[1, 0] + r[1, w - 1]).item() / 2, abs=1e-5)
    assert at(2.5 + w, 1 - h, filter_mode="linear") == pytest.approx(at(2.5, 1, filter_mode="linear"), abs=1e-4)
    assert at(-1, 1, filter_mode="nearest") == r[1, w - 1].item()
    # clamp: constant beyond the edge texel centres
    for x in (-0.5, -3, -100):
        assert at(x, 1, boundary_mode="clamp") == pytest.approx(r[1, 0].item(), abs=1e-5)
        assert at(w - 1 - x, 1, boundary_mode="clamp") == pytest.approx(r[1, w - 1].item(), abs=1e-5)
    # zero: fades to 0 within half a texel of the border, 0 beyond
    assert at(-0.5, 1, boundary_mode="zero") == pytest.approx(r[1, 0].item() / 2, abs=1e-5)
    assert at(1, -0.5, boundary_mode="zero") == pytest.approx(r[0, 1].item() / 2, abs=1e-5)
    for x in (-1, -5, w, w + 3):
        assert at(x, 1, boundary_mode="zero") == 0
        assert at(x, 1, boundary_mode="zero", filter_mode="nearest") == 0


def test_level_selection_by_powers_of_two(device):
    size = 16
    tex = torch.rand(1, size, size, 2, generator=torch.Generator().manual_seed(9))
    for k in range(5):
        n = size >> k
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        uv = torch.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1)[None].float()  # texel centres of level k
        block = tex.reshape(1, n, size // n, n, size // n, 2).mean((2, 4))  # level k, computed directly
        for scale in (1.0, -1.0):  # a mirrored footprint has the same size
            uv_da = torch.tensor([scale * 2**k / size, 0, 0, 2**k / size]).expand(1, n, n, 4).contiguous()
            for mode in MIP_FILTERS:
                out = dr.texture(tex.to(device), uv.to(device), uv_da.to(device), filter_mode=mode)
                _close(out, block, 1e-6, f"level {k} from uv_da ({mode})")
            out = dr.texture(tex.to(device), uv.to(device), mip_level_bias=torch.full((1, n, n), float(k)).to(device))
            _close(out, block, 1e-6, f"level {k} from mip_level_bias")
        if k < 4:  # halfway between levels k and k + 1: the mean of both lookups
            uv_da = torch.tensor([2 ** (k + 0.5) / size, 0, 0, 2 ** (k + 0.5) / size]).expand(1, n, n, 4).contiguous()
            out = dr.texture(tex.to(device), uv.to(device), uv_da.to(device))
            coarse = tex.reshape(1, n // 2, 2 * size // n, n // 2, 2 * size // n, 2).mean((2, 4))
            expected = (block + dr.texture(coarse, uv)) / 2
            _close(out, expected, 1e-6, f"level {k} + 0.5")
            nearest_level = dr.texture(
                tex.to(device), uv.to(device), uv_da.to(device), filter_mode="linear-mipmap-nearest"
            )
            _close(nearest_level, block, 1e-6, f"floor of level {k} + 0.5")


def test_cube_face_orientation(device):
    """Nearest lookups of hand-derived directions (OpenGL's table) on a 4x4 cube whose
    texel (face, row, column) holds 100 face + 10 row + column."""
    f, yy, xx = torch.meshgrid(torch.arange(6), torch.arange(4), torch.arange(4), indexing="ij")
    tex = (100 * f + 10 * yy + xx).float()[None, ..., None].to(device)
    cases = [
        ((1, 0.3, 0.6), 10),  # +X: s = (-z + 1) / 2 = 0.2, t = (-y + 1) / 2 = 0.35
        ((-1, 0.3, 0.6), 113),  # -X: s = (z + 1) / 2 = 0.8, t = 0.35
        ((0.3, 1, 0.6), 232),  # +Y: s = (x + 1) / 2 = 0.65, t = (z + 1) / 2 = 0.8
        ((0.3, -1, 0.6), 302),  # -Y: s = 0.65, t = (-z + 1) / 2 = 0.2
        ((0.3, 0.6, 1), 402),  # +Z: s = 0.65, t = (-y + 1) / 2 = 0.2
        ((0.3, 0.6, -1), 501),  # -Z: s = (-x + 1) / 2 = 0.35, t = 0.2
    ]
    dirs = torch.tensor([d for d, _ in cases], dtype=torch.float32)
    dirs = torch.cat([dirs, dirs * 7.5]).view(1, 1, -1, 3).to(device)  # length does not matter
    out = dr.texture(tex, dirs, filter_mode="nearest", boundary_mode="cube")
    assert out.flatten().tolist() == [float(v) for _, v in cases] * 2


def test_cube_corners_and_seams(device):
    n = 4
    tex = torch.rand(1, 6, n, n, 2, generator=torch.Generator().manual_seed(10))
    # every cube corner: the mean of the three texels meeting there, whichever face is chosen
    for corner in [(sx, sy, sz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]:
        d = torch.tensor(corner, dtype=torch.float64)
        texels = []
        for axis in range(3):
            face = torch.tensor(2 * axis + (corner[axis] < 0))
            _, s, t = ref.cube_face_coords(d, face)
            texels.append(tex[0, face, min(int(t * n), n - 1), min(int(s * n), n - 1)])
        expected = sum(texels) / 3
        nudged = [d] + [d * torch.tensor([1 + 1e-4 * (a == j) for j in range(3)]) for a in range(3)]
        dirs = torch.stack(nudged).float().view(1, 1, 4, 3).to(device)
        out = dr.texture(tex.to(device), dirs, boundary_mode="cube")
        _close(out[0, 0], expected.expand(4, 2), 2e-3, f"corner {corner}")
    # every edge: lookups just either side agree (taps continue on the neighbouring face)
    along = torch.linspace(-0.95, 0.95, 9)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        for sa in (-1, 1):
            for sb in (-1, 1):
                d = torch.zeros(9, 3)
                d[:, a], d[:, b], d[:, 3 - a - b] = sa, sb, along
                eps = torch.zeros(3)
                eps[b] = 1e-4 * sb
                dirs = torch.stack([d + eps, d - eps], 1).view(1, 9, 2, 3).to(device)
                for mode in ("linear", "linear-mipmap-linear"):
                    bias = torch.full((1, 9, 2), 0.6, device=device)
                    out = dr.texture(tex.to(device), dirs, mip_level_bias=bias, filter_mode=mode, boundary_mode="cube")
                    _close(out[:, :, 0], out[:, :, 1], 2e-3, f"edge {(a, b, sa, sb)} {mode}")


# ---------------------------------------------------------------------------
# Finite differences of the kernels (float32), pixel by pixel


def _fd_check(device, make_out, x, tol=2e-2, h=1e-3):
    """Per-pixel directional derivatives of sum_c(out * v) by x against central differences,
    skipping pixels where the one-sided differences disagree (a kink or jump within h)."""
    x = x.to(device)
    g = torch.Generator().manual_seed(11)
    delta = torch.randn(x.shape, generator=g).to(device)
    xr = x.clone().requires_grad_()
    out = make_out(xr)
    v = torch.randn(out.shape, generator=g).to(device)
    (grad,) = torch.autograd.grad((out * v).sum(), xr)
    pixel_dims = out.ndim - 1
    analytic = (grad * delta).reshape(*out.shape[:pixel_dims], -1).sum(-1)
    with torch.no_grad():
        f0, fp, fm = ((make_out(x + s * h * delta) * v).sum(-1) for s in (0, 1, -1))
    forward, backward = (fp - f0) / h, (f0 - fm) / h
    smooth = (forward - backward).abs() <= 0.02 * (1 + forward.abs())
    assert smooth.float().mean() > 0.6, "too few pixels away from discontinuities"
    central = (fp - fm) / (2 * h)
    err = (analytic - central)[smooth].abs()
    scale = 1 + central[smooth].abs()
    assert (err <= tol * scale).all(), f"max FD error {(err / scale).max():.3g}"


@pytest.mark.parametrize("boundary_mode", BOUNDARIES)
def test_finite_differences(device, boundary_mode):
    cube = boundary_mode == "cube"
    tex, uv, uv_da, bias = (x.to(device) for x in _case(cube, size=(8, 8) if cube else (8, 16), res=(8, 8), seed=12))
    kw = {"boundary_mode": boundary_mode}
    _fd_check(device, lambda u: dr.texture(tex, u, **kw), uv)
    _fd_check(device, lambda u: dr.texture(tex, u, uv_da, bias, **kw), uv)
    _fd_check(device, lambda d: dr.texture(tex, uv, d, bias, **kw), uv_da)
    _fd_check(device, lambda b: dr.texture(tex, uv, uv_da, b, **kw), bias)
    _fd_check(device, lambda b: dr.texture(tex, uv, None, b, **kw), bias + 1.5)


# ---------------------------------------------------------------------------
# Degenerate inputs


@pytest.mark.parametrize("filter_mode", FILTERS)
@pytest.mark.parametrize("boundary_mode", BOUNDARIES)
def test_no_nan(device, boundary_mode, filter_mode):
    inf, nan = math.inf, math.nan
    if boundary_mode == "cube":
        tex = torch.rand(2, 6, 4, 4, 3)
        coords = [
            (1, 1, 1),
            (-1, 1, -1),
            (1, 1, 0),
            (0, -2, 2),
            (1, 0, 0),
            (0, 0, -3),
            (0, 0, 0),
            (1e-30, 0, 1e-31),
            (1e30, -1e30, 3),
            (nan, 1, 0),
            (inf, 0, 0),
            (1, -inf, inf),
            (0.5, 0.25, 0.125),
            (-0.3, 0.7, -0.7),
        ]
        da_rows = [
            (0,) * 6,
            (1,) * 6,
            (1, 0, 0, 1, 0, 0),
            (1e30,) * 6,
            (1e-30, 0, 0, 1e-30, 0, 0),
            (nan,) * 6,
            (inf, 0, 0, 0, 0, 0),
        ]
    else:
        tex = torch.rand(2, 4, 8, 3)
        coords = [
            (0, 0),
            (1, 1),
            (0.5, 0.5),
            (0.0625, 0.125),
            (-1, 2),
            (1e30, -1e30),
            (-3e38, 0.2),
            (nan, 0.5),
            (inf, -inf),
            (0.999999, 1e-8),
            (-1e-8, 0.5),
            (2.0 + 1 / 16, 0.375),
            (0.1, 0.2),
            (0.9, 0.7),
        ]
        da_rows = [
            (0, 0, 0, 0),
            (0.25, 0, 0, 0.25),
            (1, 1, 1, 1),
            (1e30, 0, 0, 1e30),
            (1e-30, 0, 0, 1e-30),
            (nan, 0, 0, 0),
            (inf, 0, 0, -inf),
        ]
    biases = [0.0, -5.0, 1.5, 40.0, inf, -inf, nan]
    rows = [(c, d, b) for c in coords for d in da_rows for b in biases]
    uv = torch.tensor([c for c, _, _ in rows], dtype=torch.float32).view(2, 7, -1, len(coords[0]))
    uv_da = torch.tensor([d for _, d, _ in rows], dtype=torch.float32).view(*uv.shape[:3], -1)
    bias = torch.tensor([b for _, _, b in rows], dtype=torch.float32).view(uv.shape[:3])
    inputs = [x.to(device).requires_grad_() for x in (tex, uv, uv_da, bias)]
    mip = filter_mode in MIP_FILTERS
    out = dr.texture(
        *inputs[:2], *(inputs[2:] if mip else (None, None)), filter_mode=filter_mode, boundary_mode=boundary_mode
    )
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True, materialize_grads=True, retain_graph=True)
    for name, g in zip(("tex", "uv", "uv_da", "mip_level_bias"), grads):
        assert torch.isfinite(g).all(), f"non-finite gradient to {name}"
    if boundary_mode == "cube":  # invalid directions: 0 and no gradient
        bad = ~(torch.isfinite(uv).all(-1) & (uv != 0).any(-1))
        assert bad.any()
        assert not out[bad.to(device)].any()
        assert not grads[1][bad.to(device)].any() and not grads[2][bad.to(device)].any()
        (g_tex,) = torch.autograd.grad((out * bad.to(device)[..., None]).sum(), inputs[0])
        assert not g_tex.any()


def test_nearest_gives_no_uv_gradient(device):
    tex, uv, _, _ = (x.to(device) for x in _case(False))
    uv = uv.requires_grad_()
    (g,) = torch.autograd.grad(dr.texture(tex, uv, filter_mode="nearest").sum(), uv)
    assert not g.any()


# ---------------------------------------------------------------------------
# Validation


@pytest.fixture
def args(device):
    """Valid arguments to break one at a time."""
    g = torch.Generator().manual_seed(13)
    t = torch.rand(1, 8, 8, 3, generator=g).to(device)
    return {
        "t": t,
        "c": torch.rand(1, 6, 4, 4, 3, generator=g).to(device),
        "uv": torch.rand(1, 2, 2, 2, generator=g).to(device),
        "d": torch.rand(1, 2, 2, 3, generator=g).to(device),
        "da": torch.rand(1, 2, 2, 4, generator=g).to(device),
        "b": torch.rand(1, 2, 2, generator=g).to(device),
        "mip_other": dr.texture_construct_mip(t[:, :4, :4]),
        "level": lambda *shape, dtype=torch.float32: torch.rand(*shape, dtype=dtype, device=device),
    }


BAD_CALLS = {
    "tex rank": (lambda a: dr.texture(a["t"][0], a["uv"]), ValueError, r"tex must have shape \[N, h, w, C\]"),
    "tex dtype": (lambda a: dr.texture(a["t"].double(), a["uv"]), TypeError, r"tex must have dtype torch.float32"),
    "tex type": (lambda a: dr.texture([[0.5]], a["uv"]), TypeError, r"tex must be a torch.Tensor"),
    "tex empty": (lambda a: dr.texture(a["t"][:, :0], a["uv"]), ValueError, r"tex must have every dimension >= 1"),
    "tex batch": (
        lambda a: dr.texture(a["t"].expand(3, -1, -1, -1), a["uv"].expand(2, -1, -1, -1)),
        ValueError,
        r"3 textures for a batch of 2",
    ),
    "uv trailing": (lambda a: dr.texture(a["t"], a["d"]), ValueError, r"uv must have shape \[N, H, W, 2\]"),
    "uv dtype": (lambda a: dr.texture(a["t"], a["uv"].double()), TypeError, r"uv must have dtype"),
    "uv rank": (lambda a: dr.texture(a["t"], a["uv"][0]), ValueError, r"uv must have shape"),
    "uv_da trailing": (
        lambda a: dr.texture(a["t"], a["uv"], a["uv"]),
        ValueError,
        r"uv_da must have shape \[N, H, W, 4\]",
    ),
    "uv_da size": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"][:, :1]),
        ValueError,
        r"uv_da must have shape \[1, 2, 2, 4\] to match uv",
    ),
    "uv_da dtype": (lambda a: dr.texture(a["t"], a["uv"], a["da"].double()), TypeError, r"uv_da must have dtype"),
    "bias rank": (
        lambda a: dr.texture(a["t"], a["uv"], None, a["b"][..., None]),
        ValueError,
        r"mip_level_bias must have",
    ),
    "bias size": (
        lambda a: dr.texture(a["t"], a["uv"], None, a["b"][:, :1]),
        ValueError,
        r"mip_level_bias must have shape \[1, 2, 2\] to match uv",
    ),
    "devices": (lambda a: dr.texture(a["t"], a["uv"].to("meta")), ValueError, r"uv must be on a CPU or CUDA device"),
    "cube unequal sides": (
        lambda a: dr.texture(a["level"](1, 6, 4, 2, 3), a["d"], boundary_mode="cube"),
        ValueError,
        r"six square faces",
    ),
    "cube five faces": (
        lambda a: dr.texture(a["level"](1, 5, 4, 4, 3), a["d"], boundary_mode="cube"),
        ValueError,
        r"six square faces",
    ),
    "cube mode on 2D tex": (lambda a: dr.texture(a["t"], a["d"], boundary_mode="cube"), ValueError, r"cube map tex"),
    "cube without cube mode": (
        lambda a: dr.texture(a["c"], a["uv"]),
        ValueError,
        r"cube maps require boundary_mode='cube'",
    ),
    "cube uv": (
        lambda a: dr.texture(a["c"], a["uv"], boundary_mode="cube"),
        ValueError,
        r"uv must have shape \[N, H, W, 3\]",
    ),
    "cube uv_da": (
        lambda a: dr.texture(a["c"], a["d"], a["da"], boundary_mode="cube"),
        ValueError,
        r"uv_da must have shape \[N, H, W, 6\]",
    ),
    "filter mode": (
        lambda a: dr.texture(a["t"], a["uv"], filter_mode="bilinear"),
        ValueError,
        r"filter_mode must be one of .*'bilinear'",
    ),
    "boundary mode": (
        lambda a: dr.texture(a["t"], a["uv"], boundary_mode="mirror"),
        ValueError,
        r"boundary_mode must be one of .*'mirror'",
    ),
    "trilinear without lod": (
        lambda a: dr.texture(a["t"], a["uv"], filter_mode="linear-mipmap-linear"),
        ValueError,
        r"needs uv_da or mip_level_bias",
    ),
    "mipmap-nearest without lod": (
        lambda a: dr.texture(a["t"], a["uv"], filter_mode="linear-mipmap-nearest"),
        ValueError,
        r"needs uv_da or mip_level_bias",
    ),
    "mip for another shape": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], mip=a["mip_other"]),
        ValueError,
        r"mip was built for a texture of shape \[1, 4, 4, 3\]",
    ),
    "mip for a 2D texture on a cube": (
        lambda a: dr.texture(a["c"], a["d"], None, a["b"], mip=a["mip_other"], boundary_mode="cube"),
        ValueError,
        r"mip was built for a texture",
    ),
    "mip type": (lambda a: dr.texture(a["t"], a["uv"], a["da"], mip=a["t"]), TypeError, r"mip must be a TextureMip"),
    "mip level shape": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], mip=[a["level"](1, 4, 3, 3)]),
        ValueError,
        r"mip\[0\] \(mip level 1\) must have shape \[1, 4, 4, 3\]",
    ),
    "mip level dtype": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], mip=[a["level"](1, 4, 4, 3, dtype=torch.float64)]),
        TypeError,
        r"mip\[0\] must have dtype",
    ),
    "mip too many levels": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], mip=[a["level"](1, 4, 4, 3)] * 5),
        ValueError,
        r"holds 5 levels.*only 3",
    ),
    "max_mip_level negative": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], max_mip_level=-1),
        ValueError,
        r"max_mip_level must be >= 0",
    ),
    "max_mip_level type": (
        lambda a: dr.texture(a["t"], a["uv"], a["da"], max_mip_level=1.5),
        TypeError,
        r"max_mip_level must be None or an int",
    ),
    "construct rank": (
        lambda a: dr.texture_construct_mip(a["t"][0]),
        ValueError,
        r"texture_construct_mip: tex must have shape",
    ),
    "construct cube without cube_mode": (lambda a: dr.texture_construct_mip(a["c"]), ValueError, r"cube_mode=True"),
    "construct cube shape": (
        lambda a: dr.texture_construct_mip(a["t"], cube_mode=True),
        ValueError,
        r"six square faces",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_validation(args, case):
    call, exc, pattern = BAD_CALLS[case]
    with pytest.raises(exc, match=pattern):
        call(args)


def test_non_contiguous_inputs(device):
    tex, uv, uv_da, bias = (x.to(device) for x in _case(False))
    expected = dr.texture(tex, uv, uv_da, bias)
    got = dr.texture(
        tex.transpose(1, 2).contiguous().transpose(1, 2),
        uv.permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0),
        uv_da.permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0),
        bias.transpose(1, 2).contiguous().transpose(1, 2),
    )
    assert torch.equal(got, expected)
