"""interpolate: values and derivatives against the reference, gradients, validation."""

import pytest
import reference as ref
import torch
from scenes import random_scene, screen_triangle, tri_tensor

import glrast as dr


def render(glctx, device, num_images=2, seed=0, res=(24, 32)):
    pos, tri = random_scene(num_tris=10, num_images=num_images, seed=seed)
    rast, rast_db = dr.rasterize(glctx, pos.to(device), tri.to(device), res)
    return pos, tri, rast, rast_db


@pytest.mark.parametrize("attr_batch", ["shared", "one", "per_image"])
def test_values_and_derivatives_match_reference(glctx, device, attr_batch):
    pos, tri, rast, rast_db = render(glctx, device)
    n, v = pos.shape[:2]
    g = torch.Generator().manual_seed(4)
    attr = {
        "shared": torch.randn(v, 5, generator=g),
        "one": torch.randn(1, v, 5, generator=g),
        "per_image": torch.randn(n, v, 5, generator=g),
    }[attr_batch]
    diff = [4, 1]
    out, out_da = dr.interpolate(attr.to(device), rast, tri.to(device), rast_db=rast_db, diff_attrs=diff)
    assert out.shape == (n, 24, 32, 5) and out_da.shape == (n, 24, 32, 4)
    ids = dr.triangle_index(rast.cpu())
    out_ref, da_ref = ref.interpolate(attr, rast.cpu()[..., :2], rast_db.cpu(), tri, ids, diff)
    torch.testing.assert_close(out.cpu(), out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_da.cpu(), da_ref, atol=1e-5, rtol=1e-5)
    assert torch.all(out.cpu()[ids < 0] == 0)


def test_diff_attrs_all_and_none(glctx, device):
    _, tri, rast, rast_db = render(glctx, device, num_images=1)
    attr = torch.randn(30, 3, device=device)
    _, da_all = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs="all")
    _, da_list = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs=[0, 1, 2])
    assert torch.equal(da_all, da_list)
    out, da_none = dr.interpolate(attr, rast, tri.to(device), rast_db)
    assert da_none.shape == (1, 24, 32, 0)
    with pytest.raises(ValueError, match="need rast_db"):  # as nvdiffrast: derivatives need rast_db
        dr.interpolate(attr, rast, tri.to(device), diff_attrs="all")
    _, da_empty = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs=[])
    assert da_empty.shape == (1, 24, 32, 0)
    _, da_one = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs=(2,))  # any sequence
    assert torch.equal(da_one, da_all[..., 4:6]) and da_one.abs().max() > 0


def test_perspective_correct_attribute_by_hand(glctx, device):
    # An attribute equal to the clip-space x/w of each vertex interpolates to the pixel's NDC x
    # only if interpolation is perspective-correct in clip space... x itself (not x/w) does:
    # sum(lam_k x_k) / sum(lam_k w_k) = xn. Check attr = (x, w): out_x / out_w == xn.
    h, w = 20, 20
    pos = screen_triangle([(1, 1), (19, 3), (4, 18)], h, w, wclip=[0.5, 2.0, 4.0])
    tri = tri_tensor([[0, 1, 2]], device)
    rast, _ = dr.rasterize(glctx, pos[None].to(device), tri, (h, w))
    out, _ = dr.interpolate(pos[:, [0, 1, 3]].to(device), rast, tri)
    out = out.cpu()[0]
    cov = rast.cpu()[0, ..., 3] > 0
    xn, yn = ref.pixel_centres_ndc(h, w, torch.float32)
    torch.testing.assert_close((out[..., 0] / out[..., 2])[cov], xn[cov], atol=1e-5, rtol=0)
    torch.testing.assert_close((out[..., 1] / out[..., 2])[cov], yn[cov], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attr_batch", ["shared", "one", "per_image"])
def test_gradients_match_reference(glctx, device, attr_batch):
    pos, tri, rast, rast_db = render(glctx, device, seed=7)
    n, v = pos.shape[:2]
    g = torch.Generator().manual_seed(8)
    attr = torch.randn({"shared": (v, 4), "one": (1, v, 4), "per_image": (n, v, 4)}[attr_batch], generator=g)
    diff = [0, 3]
    inputs = [
        attr.to(device).requires_grad_(True),
        rast.detach().requires_grad_(True),
        rast_db.detach().requires_grad_(True),
    ]
    out, out_da = dr.interpolate(inputs[0], inputs[1], tri.to(device), inputs[2], diff_attrs=diff)
    w_out = torch.randn(out.shape, generator=g)
    w_da = torch.randn(out_da.shape, generator=g)
    grads = torch.autograd.grad((out * w_out.to(device)).sum() + (out_da * w_da.to(device)).sum(), inputs)
    ids = dr.triangle_index(rast.cpu())
    ref_inputs = [
        attr.double().requires_grad_(True),
        rast.detach().cpu().double().requires_grad_(True),
        rast_db.detach().cpu().double().requires_grad_(True),
    ]
    out_r, da_r = ref.interpolate(ref_inputs[0], ref_inputs[1][..., :2], ref_inputs[2], tri, ids, diff)
    grads_r = torch.autograd.grad((out_r * w_out.double()).sum() + (da_r * w_da.double()).sum(), ref_inputs)
    assert grads[0].shape == attr.shape  # a broadcast attr gets the sum over the batch
    for got, want in zip(grads, grads_r):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=1e-4)
    assert torch.all(grads[1].cpu()[..., 2:] == 0)  # z/w and id carry no gradient


@pytest.mark.parametrize("wanted", [(0,), (1,), (2,), (1, 2), (0, 2)])
def test_gradients_of_a_subset_are_those_of_the_whole(glctx, device, wanted):
    """The backward computes only the gradients of inputs that require one (col's backward skips
    rast's, a pose fit attr's), and those are what the full backward gives."""
    pos, tri, rast, rast_db = render(glctx, device, seed=3)
    g = torch.Generator().manual_seed(4)
    attr = torch.randn(pos.shape[1], 3, generator=g).to(device)
    inputs = [attr, rast.detach(), rast_db.detach()]

    def grads(which):
        leaves = [t.clone().requires_grad_(k in which) for k, t in enumerate(inputs)]
        out, out_da = dr.interpolate(leaves[0], leaves[1], tri.to(device), leaves[2], diff_attrs=[1])
        loss = (out * torch.arange(out.numel(), device=device).view(out.shape).sin()).sum() + out_da.square().sum()
        return dict(zip(which, torch.autograd.grad(loss, [leaves[k] for k in which])))

    whole = grads((0, 1, 2))
    subset = grads(wanted)
    for k in wanted:
        if k == 0:  # attr's sums run in per-thread slots, whose share of the pixels may differ between runs
            torch.testing.assert_close(subset[k], whole[k], rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(subset[k], whole[k]), k


def test_attr_gradient_matches_finite_differences(glctx, device):
    """float64 central differences of the kernel's own output (interpolate is linear in attr)."""
    pos, tri, rast, rast_db = render(glctx, device, num_images=1, res=(12, 12))
    attr = torch.randn(30, 2, dtype=torch.float64)
    weights = torch.randn(1, 12, 12, 2, dtype=torch.float64)

    def loss(a):
        out, _ = dr.interpolate(a.float().to(device), rast, tri.to(device))
        return (out.cpu().double() * weights).sum()

    a = attr.float().to(device).requires_grad_(True)
    out, _ = dr.interpolate(a, rast, tri.to(device))
    (grad,) = torch.autograd.grad((out * weights.float().to(device)).sum(), a)
    eps = 1e-2
    for i in range(0, 30, 3):
        for k in range(2):
            d = torch.zeros_like(attr)
            d[i, k] = eps
            fd = (loss(attr + d) - loss(attr - d)) / (2 * eps)
            assert grad[i, k].item() == pytest.approx(fd.item(), abs=1e-3, rel=1e-3)


def test_range_mode_with_global_ids(glctx, device):
    pos, tri = random_scene(num_tris=6, num_images=1, seed=11)
    pos = pos[0].to(device)
    ranges = torch.tensor([[0, 3], [3, 3], [1, 4]], dtype=torch.int32)
    rast, rast_db = dr.rasterize(glctx, pos, tri.to(device), (16, 16), ranges=ranges)
    attr = torch.randn(18, 3)
    out, da = dr.interpolate(attr.to(device), rast, tri.to(device), rast_db, diff_attrs="all")
    out_r, da_r = ref.interpolate(
        attr, rast.cpu()[..., :2], rast_db.cpu(), tri, dr.triangle_index(rast.cpu()), [0, 1, 2]
    )
    torch.testing.assert_close(out.cpu(), out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(da.cpu(), da_r, atol=1e-5, rtol=1e-5)


def test_non_contiguous_inputs_are_accepted(glctx, device):
    _, tri, rast, _ = render(glctx, device, num_images=1)
    attr = torch.randn(3, 30, device=device).t()  # [30, 3], not contiguous
    assert not attr.is_contiguous()
    out, _ = dr.interpolate(attr, rast, tri.to(device))
    out_c, _ = dr.interpolate(attr.contiguous(), rast, tri.to(device))
    assert torch.equal(out, out_c)


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("attr_dtype", TypeError, "attr must have dtype torch.float32"),
        ("attr_rank", ValueError, r"attr must have shape \[V, A\] or \[N, V, A\]"),
        ("rast_shape", ValueError, r"rast must have shape \[N, H, W, 4\]"),
        ("batch", ValueError, "2 attribute sets for a batch of 1"),
        ("tri_range", ValueError, r"interpolate: tri holds vertex index 30, outside \[0, 30\) \(attr has 30 vert"),
        ("db_shape", ValueError, "rast_db must have the shape of rast"),
        ("diff_index", ValueError, "diff_attrs index 5 is outside"),
        ("diff_str", ValueError, "diff_attrs must be 'all'"),
        ("device", ValueError, "tri must be on a CPU or CUDA device, got .* meta"),
        ("db_device", ValueError, "rast_db must be on a CPU or CUDA device"),
        ("diff_types", TypeError, r"diff_attrs must be 'all' or a sequence of int attribute indices, got \['1', 0.7\]"),
        ("diff_bool", TypeError, "diff_attrs must be 'all' or a sequence of int"),
        ("diff_no_db", ValueError, "diff_attrs='all' asks for attribute derivatives, which need rast_db"),
        ("diff_list_no_db", ValueError, r"diff_attrs=\[0\] asks for attribute derivatives"),
        ("attr_type", TypeError, "attr must be a torch.Tensor"),
        ("rast_dtype", TypeError, "rast must have dtype torch.float32"),
        ("db_dtype", TypeError, "rast_db must have dtype torch.float32"),
        ("tri_dtype", TypeError, "tri must have dtype torch.int32"),
        ("tri_shape", ValueError, r"tri must have shape \[T, 3\]"),
        ("attr_rank4", ValueError, r"attr must have shape \[V, A\] or \[N, V, A\]"),
    ],
)
def test_invalid_arguments(case, error, match):
    rast = torch.zeros(1, 4, 4, 4)
    attr = torch.zeros(30, 3)
    tri = torch.zeros(2, 3, dtype=torch.int32)
    kwargs = {}
    if case == "attr_dtype":
        attr = attr.double()
    elif case == "attr_rank":
        attr = torch.zeros(30)
    elif case == "rast_shape":
        rast = torch.zeros(1, 4, 4, 3)
    elif case == "batch":
        attr = torch.zeros(2, 30, 3)
    elif case == "tri_range":
        tri[1, 2] = 30
    elif case == "db_shape":
        kwargs["rast_db"] = torch.zeros(1, 4, 5, 4)
    elif case == "diff_index":
        kwargs.update(rast_db=torch.zeros(1, 4, 4, 4), diff_attrs=[0, 5])
    elif case == "diff_str":
        kwargs.update(rast_db=torch.zeros(1, 4, 4, 4), diff_attrs="some")
    elif case == "diff_types":
        kwargs.update(rast_db=torch.zeros(1, 4, 4, 4), diff_attrs=["1", 0.7])
    elif case == "diff_bool":
        kwargs.update(rast_db=torch.zeros(1, 4, 4, 4), diff_attrs=[True])
    elif case == "diff_no_db":
        kwargs.update(diff_attrs="all")
    elif case == "diff_list_no_db":
        kwargs.update(diff_attrs=[0])
    elif case == "device":
        tri = tri.to("meta")
    elif case == "db_device":
        kwargs["rast_db"] = torch.zeros(1, 4, 4, 4, device="meta")
    elif case == "attr_type":
        attr = attr.tolist()
    elif case == "rast_dtype":
        rast = rast.double()
    elif case == "db_dtype":
        kwargs["rast_db"] = torch.zeros(1, 4, 4, 4, dtype=torch.float64)
    elif case == "tri_dtype":
        tri = tri.long()
    elif case == "tri_shape":
        tri = torch.zeros(2, 4, dtype=torch.int32)
    elif case == "attr_rank4":
        attr = torch.zeros(1, 1, 30, 3)
    with pytest.raises(error, match=match):
        dr.interpolate(attr, rast, tri, **kwargs)


def test_backward_of_a_plain_sum(glctx, device):
    """out.sum() hands backward a stride-0 gradient, made contiguous for the kernel."""
    pos, tri, rast, _ = render(glctx, device, num_images=2, res=(96, 128))
    attr = torch.randn(30, 3, device=device, requires_grad=True)
    out, _ = dr.interpolate(attr, rast, tri.to(device))
    out.sum().backward()
    ids = dr.triangle_index(rast.cpu())
    attr_ref = attr.detach().cpu().double().requires_grad_(True)
    out_ref, _ = ref.interpolate(attr_ref, rast.cpu()[..., :2].double(), None, tri, ids)
    out_ref.sum().backward()
    torch.testing.assert_close(attr.grad.cpu().double(), attr_ref.grad, atol=1e-3, rtol=1e-4)


def test_rast_from_another_mesh_does_not_read_past_tri(device):
    """Ids in rast beyond tri (a rast rendered from a bigger mesh) are treated as empty
    pixels instead of indexing past the end of tri."""
    tri = torch.tensor([[0, 1, 2], [1, 2, 0]], dtype=torch.int32, device=device)
    rast = torch.zeros(1, 1, 4, 4)
    rast[0, 0, :, :2] = torch.tensor([0.5, 0.25])
    rast[0, 0, :, 3] = torch.tensor([2.0, 3.0, 5e6, ref.encode_triangle_id(300_000_000)])
    attr = torch.tensor([[1.0], [2.0], [4.0]], device=device, requires_grad=True)
    rast_db = torch.ones(1, 1, 4, 4, device=device)
    out, da = dr.interpolate(attr, rast.to(device), tri, rast_db, diff_attrs="all")
    assert out[0, 0, :, 0].tolist() == [0.5 * 2 + 0.25 * 4 + 0.25 * 1, 0.0, 0.0, 0.0]
    assert torch.all(da[0, 0, 1:] == 0) and da[0, 0, 0].abs().sum() > 0
    (out.sum() + da.sum()).backward()
    assert torch.isfinite(attr.grad).all() and attr.grad.abs().sum() > 0


def test_diff_attrs_accepts_integer_scalars(glctx, device):
    """nvdiffrast takes any int sequence (it converts with numpy): numpy and torch integers work too."""
    import numpy as np

    pos, tri, rast, rast_db = render(glctx, device, num_images=1, res=(8, 8))
    attr = torch.rand(30, 3, device=device)
    _, expected = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs=[2, 0])
    for diff in (np.array([2, 0]), torch.tensor([2, 0]), (np.int64(2), 0)):
        _, da = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs=diff)
        assert torch.equal(da, expected)
    _, empty = dr.interpolate(attr, rast, tri.to(device), diff_attrs=[])
    assert empty.shape[-1] == 0


def test_attributes_at_the_float_limit(device):
    """Attributes near FLT_MAX: a blend within float's range comes out right (not infinite from the
    float sum), and derivatives and gradients whose true value exceeds it saturate at the largest
    float instead of becoming infinite."""
    big = torch.finfo(torch.float32).max
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    rast = torch.tensor([[[[0.4, 0.35, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0]]]], device=device)
    rast_db = torch.full((1, 1, 2, 4), 0.25, device=device)
    attr = torch.tensor([[big, big], [big, -big], [big, big]], device=device, requires_grad=True)
    inputs = [attr, rast.requires_grad_(True), rast_db.requires_grad_(True)]
    out, out_da = dr.interpolate(*inputs[:2], tri, inputs[2], diff_attrs="all")
    assert out[0, 0, :, 0].tolist() == [big, big]  # u + v + (1 - u - v) = 1 times FLT_MAX
    # d(attr 1)/dX = (a0 - a2) db0 + (a1 - a2) db2 = -2 FLT_MAX / 4: within range, though a1 - a2 is not
    assert out_da[..., 0].abs().max() == 0
    torch.testing.assert_close(out_da[..., 2:], torch.full_like(out_da[..., 2:], -big / 2))
    grads = torch.autograd.grad((out * 0.5).sum() + out_da.sum(), inputs)
    for g in grads:
        assert torch.isfinite(g).all()
    assert grads[1][0, 0, :, 1].abs().max() == big  # d out / dv = a1 - a2 = -2 FLT_MAX
