"""DepthPeeler: layers against a depth-sorted reference, termination, limits."""

import pytest
import reference as ref
import torch
from scenes import random_scene, screen_triangle, tri_tensor

import glrast as dr

# ---------------------------------------------------------------------------
# Depth peeling


def test_depth_peeler_layers(glctx, device):
    h, w = 8, 8
    layers = [screen_triangle([(-8, -8), (24, -8), (-8, 24)], h, w, z=z) for z in (0.3, -0.2, 0.6)]
    pos = torch.cat(layers)[None].to(device)
    tri = tri_tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], device)
    plain, _ = dr.rasterize(glctx, pos, tri, (h, w))
    seen = []
    with dr.DepthPeeler(glctx, pos, tri, (h, w)) as peeler:
        for _ in range(4):
            rast, _ = peeler.rasterize_next_layer()
            seen.append(rast.cpu())
        with pytest.raises(RuntimeError, match="DepthPeeler"):
            dr.rasterize(glctx, pos, tri, (h, w))
    torch.testing.assert_close(seen[0], plain.cpu())
    for layer, expected in zip(seen, [1, 0, 2, -1]):  # nearest first: z = -0.2, 0.3, 0.6
        assert torch.all(dr.triangle_index(layer) == expected)
    assert torch.count_nonzero(seen[3]) == 0
    dr.rasterize(glctx, pos, tri, (h, w))  # the context is free again
    with pytest.raises(RuntimeError, match="context manager"):
        dr.DepthPeeler(glctx, pos, tri, (h, w)).rasterize_next_layer()


def _depth_order(pos, tri, h, w):
    """Per pixel, the triangle ids sorted by z/w at the pixel centre ([T, H, W], -1 where
    fewer triangles cover it), and a mask of the pixels that neither an edge (1e-3 px) nor
    a near tie in depth (1e-5) makes ambiguous."""
    zw, clear = [], torch.ones(h, w, dtype=torch.bool)
    for t in range(tri.shape[0]):
        corners = pos[tri[t].long()].double()
        inside, margin = ref.inside_triangle(corners, h, w)
        clear &= margin > 1e-3
        uv, _ = ref.barycentrics(pos, tri, torch.full((1, h, w), t))
        u, v = uv[0, ..., 0], uv[0, ..., 1]
        lam = torch.stack([u, v, 1 - u - v])
        depth = (lam * corners[:, 2, None, None]).sum(0) / (lam * corners[:, 3, None, None]).sum(0)
        zw.append(torch.where(inside, depth, torch.inf))
    zw, order = torch.stack(zw).sort(0)
    gaps = zw[1:] - zw[:-1]
    clear &= ((gaps > 1e-5) | gaps.isnan()).all(0)  # inf - inf: both absent
    return torch.where(zw.isinf(), -1, order), clear


@pytest.mark.parametrize("mode", ["instanced", "range"])
def test_depth_peeler_matches_depth_sorted_reference(glctx, device, mode):
    """Overlapping random triangles: layer k holds the k-th nearest surface at every pixel,
    with the barycentrics of that surface and gradients like rasterize's."""
    h, w = 20, 24
    pos, tri = random_scene(num_tris=10, num_images=1, seed=23)
    pos = pos[0]
    order, clear = _depth_order(pos, tri, h, w)
    depth_complexity = int((order >= 0).sum(0).max())
    assert depth_complexity >= 4 and (order[2] >= 0).sum() > 20 and clear.sum() > 400
    pos_d = pos.to(device).requires_grad_(True)
    if mode == "instanced":
        args, ranges = (pos_d[None], tri.to(device), (h, w)), None
    else:
        args, ranges = (pos_d, tri.to(device), (h, w)), torch.tensor([[0, tri.shape[0]]], dtype=torch.int32)
    g = torch.Generator().manual_seed(22)
    with dr.DepthPeeler(glctx, *args, ranges=ranges) as peeler:
        for k in range(depth_complexity + 1):
            rast, rast_db = peeler.rasterize_next_layer()
            ids = dr.triangle_index(rast.detach().cpu())
            expected = order[k] if k < depth_complexity else torch.full((h, w), -1)
            assert torch.equal(ids[0][clear], expected[clear]), f"layer {k}"
            if k == depth_complexity:
                assert torch.count_nonzero(rast) == 0
                break
            weights = torch.randn(rast.shape, generator=g)
            (grad,) = torch.autograd.grad(((rast + rast_db) * weights.to(device)).sum(), pos_d)
            pos_ref = pos.double().requires_grad_(True)
            uv, db = ref.barycentrics(pos_ref, tri, ids)
            torch.testing.assert_close(rast.detach().cpu()[..., :2], uv.float().detach(), atol=5e-5, rtol=0)
            (grad_ref,) = torch.autograd.grad((uv * weights[..., :2]).sum() + (db * weights).sum(), pos_ref)
            scale = grad_ref.abs().max().item()
            torch.testing.assert_close(grad.cpu().double(), grad_ref, atol=2e-4 * scale, rtol=1e-3)


def test_depth_peeler_coplanar_surfaces_terminate(glctx, device):
    """A duplicated triangle is not strictly farther than itself: it is peeled once, and the
    surface behind it comes next. Coplanar triangles with different vertices (equal z/w up
    to rounding) each appear at most once per pixel, so peeling ends after T layers."""
    h, w = 32, 32
    a = screen_triangle([(1, 2), (30, 5), (6, 29)], h, w, z=0.2, wclip=[1.0, 2.0, 0.7])
    # a larger triangle in the plane of `a`: its vertices are affine combinations of a's
    big = torch.tensor([[1.5, -0.25, -0.25], [-0.25, 1.5, -0.25], [-0.25, -0.25, 1.5]]) @ a
    back = screen_triangle([(-8, -8), (48, -8), (-8, 48)], h, w, z=0.5)
    tri = tri_tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], device)
    pos = torch.cat([a, a, big, back])[None].to(device)
    covered_a = ref.inside_triangle(a, h, w)[0] & (ref.inside_triangle(a, h, w)[1] > 1e-3)
    layers = []
    with dr.DepthPeeler(glctx, pos[:, :6], tri[:2], (h, w)) as peeler:  # a and its duplicate
        layers = [dr.triangle_index(peeler.rasterize_next_layer()[0].cpu())[0] for _ in range(2)]
    assert covered_a.sum() > 100
    assert torch.all((layers[0] == 0)[covered_a]) and torch.all(layers[1] == -1)
    with dr.DepthPeeler(glctx, pos, tri, (h, w)) as peeler:
        layers = [dr.triangle_index(peeler.rasterize_next_layer()[0].cpu())[0] for _ in range(5)]
    stack = torch.stack(layers[:4])
    assert torch.all(layers[4] == -1)
    assert torch.all(stack[:, covered_a] != 1)  # the duplicate never shows
    assert torch.all((stack[:, covered_a] == 3).sum(0) == 1)  # the back surface once, behind
    for t in range(4):
        assert torch.all((stack == t).sum(0) <= 1)


def test_depth_peeler_storage_limit(glctx, device, monkeypatch):
    """The peeling shader reads pos and tri as storage buffers, so their size is checked;
    plain rasterize draws them as vertex and index buffers and has no such limit."""
    pos = screen_triangle([(0, 0), (4, 0), (0, 4)], 4, 4)[None].to(device)
    tri = tri_tensor([[0, 1, 2]], device)
    monkeypatch.setattr(glctx, "max_storage_bytes", 16)
    with pytest.raises(ValueError, match="pos needs 48 bytes of GL storage buffer"):
        dr.DepthPeeler(glctx, pos, tri, (4, 4))
    rast, _ = dr.rasterize(glctx, pos, tri, (4, 4))
    assert (rast[..., 3] > 0).sum() == 6  # centres with x + y < 4


def test_depth_peeler_one_at_a_time(glctx, device):
    pos = torch.zeros(1, 3, 4, device=device)
    tri = tri_tensor([[0, 1, 2]], device)
    with dr.DepthPeeler(glctx, pos, tri, (4, 4)):
        with pytest.raises(RuntimeError, match="already active"):
            with dr.DepthPeeler(glctx, pos, tri, (4, 4)):
                pass
