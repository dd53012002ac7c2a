"""texture at the limits of float32: footprints, texels and cube directions near the largest or
smallest floats give the values the formula means and finite gradients."""

import pytest
import reference as ref
import torch

import glrast as dr

BIG = torch.finfo(torch.float32).max


@pytest.mark.parametrize("scale", [2.2e37, 1e38, BIG])
def test_huge_footprint_samples_the_coarsest_level(device, scale):
    """A footprint beyond float's range (the LOD Jacobian overflows) is the coarsest level, as any
    footprint larger than the texture is, not the finest."""
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 16, 16, 2, generator=g).to(device)
    uv = torch.rand(1, 3, 4, 2, generator=g).to(device)
    uv_da = torch.tensor([scale, 0.0, 0.0, scale]).expand(1, 3, 4, 4).contiguous().to(device)
    out = dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear")
    torch.testing.assert_close(out, tex.mean((1, 2), keepdim=True).expand_as(out), atol=1e-6, rtol=0)
    for bias in (torch.zeros(1, 3, 4), None):  # also with a bias, which must not bring NaN back
        b = None if bias is None else bias.to(device)
        torch.testing.assert_close(dr.texture(tex, uv, uv_da, b), out)

    cube = torch.rand(1, 6, 8, 8, 1, generator=g).to(device)
    dirs = torch.nn.functional.normalize(torch.randn(1, 3, 4, 3, generator=g), dim=-1).to(device)
    dirs_da = torch.full((1, 3, 4, 6), scale).to(device)
    out = dr.texture(cube, dirs, dirs_da, filter_mode="linear-mipmap-linear", boundary_mode="cube")
    expected = ref.texture(cube.cpu().double(), dirs.cpu().double(), dirs_da.cpu().double(),
                           filter_mode="linear-mipmap-linear", boundary_mode="cube")  # fmt: skip
    torch.testing.assert_close(out.cpu().double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_texels_at_the_float_limit_give_finite_gradients(device, filter_mode):
    """A uv gradient whose true value exceeds float's range (texel differences of 2 * FLT_MAX,
    times the texture's size) saturates at the largest float, with the right sign."""
    g = torch.Generator().manual_seed(1)
    tex = torch.where(torch.rand(1, 8, 8, 3, generator=g) < 0.5, -BIG, BIG).to(device)
    tex[0, 0, :4] = 0.0
    uv = torch.rand(1, 5, 6, 2, generator=g).to(device).requires_grad_(True)
    uv_da = (torch.rand(1, 5, 6, 4, generator=g) * 0.3).to(device).requires_grad_(True)
    tex_in = tex.clone().requires_grad_(True)
    kwargs = {"uv_da": uv_da} if filter_mode != "linear" else {}
    out = dr.texture(tex_in, uv, filter_mode=filter_mode, **kwargs)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), [tex_in, uv, *kwargs.values()])
    for grad in grads:
        assert torch.isfinite(grad).all()
    assert grads[1].abs().max() == BIG

    # one texel at FLT_MAX beside zeros: d out / d s = (1 - fy) * FLT_MAX * 8 -> saturated, positive
    tex = torch.zeros(1, 4, 4, 1, device=device)
    tex[0, 1, 1] = BIG
    uv = torch.full((1, 1, 1, 2), 0.3, device=device, requires_grad=True)  # between texels 0 and 1
    (grad,) = torch.autograd.grad(dr.texture(tex, uv, filter_mode="linear").sum(), uv)
    assert torch.equal(grad.cpu(), torch.full((1, 1, 1, 2), BIG))


@pytest.mark.parametrize("direction", [(1e-42, 3e-43, 0.0), (3e-43, -1e-42, 1e-44), (0.0, 0.0, -1e-45)])
def test_cube_directions_of_denormal_length(device, direction):
    """A direction of denormal length is a valid direction: it looks up what the same direction scaled
    up does, and its gradient (1 / |d| beyond float's range) saturates instead of becoming infinite."""
    g = torch.Generator().manual_seed(2)
    cube = torch.rand(1, 6, 8, 8, 2, generator=g).to(device)
    d = torch.tensor(direction).view(1, 1, 1, 3).to(device).requires_grad_(True)
    out = dr.texture(cube, d, boundary_mode="cube")
    scaled = torch.tensor(direction).double() * 2.0**140  # the same float32 direction, exactly scaled
    expected = dr.texture(cube, scaled.float().view(1, 1, 1, 3).to(device), boundary_mode="cube")
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad((out * torch.tensor([1.0, -0.5], device=device)).sum(), d)
    assert torch.isfinite(grad).all() and grad.abs().max() > 1e30
    # with a footprint: the level comes out finite too
    da = torch.full((1, 1, 1, 6), 1e-43, device=device, requires_grad=True)
    out = dr.texture(cube, d, da, boundary_mode="cube", filter_mode="linear-mipmap-linear")
    grads = torch.autograd.grad(out.sum(), [d, da])
    assert torch.isfinite(out).all() and all(torch.isfinite(x).all() for x in grads)
