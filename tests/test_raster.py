"""rasterize: known answers, the reference oracle, finite differences, validation."""

import threading

import pytest
import reference as ref
import torch
from scenes import random_scene, screen_triangle, tri_tensor

import glrast as dr

# ---------------------------------------------------------------------------
# Known answers


@pytest.mark.parametrize("res", [(16, 16), (7, 13), (1, 1), (33, 20), (2048, 2048)])
def test_coverage_barycentrics_depth_ids_known_triangle(glctx, device, res):
    h, w = res
    pos = screen_triangle([(0.3 * w, 0.2 * h), (0.9 * w, 0.35 * h), (0.4 * w, 0.95 * h)], h, w, z=0.25)
    tri = tri_tensor([[0, 1, 2]])
    rast, rast_db = dr.rasterize(glctx, pos[None].to(device), tri.to(device), res)
    rast = rast.cpu()
    assert rast.shape == (1, h, w, 4) and rast_db.shape == (1, h, w, 4)
    inside, margin = ref.inside_triangle(pos, h, w)
    clear = margin > 1e-3  # centres on an edge are decided by GL's fill rule
    covered = rast[0, ..., 3] > 0
    assert torch.equal(covered[clear], inside[clear])
    assert torch.all(rast[0, ..., 3][covered] == 1.0)
    assert torch.all(rast[0][~covered] == 0)
    # w = 1: barycentrics are ratios of screen-space areas
    sx, sy = (pos[:, 0].double() + 1) / 2 * w, (pos[:, 1].double() + 1) / 2 * h
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")

    def area(ax, ay, bx, by, cx, cy):
        return (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)

    total = area(sx[0], sy[0], sx[1], sy[1], sx[2], sy[2])
    u = area(xx, yy, sx[1], sy[1], sx[2], sy[2]) / total
    v = area(sx[0], sy[0], xx, yy, sx[2], sy[2]) / total
    uv = torch.where(covered[..., None], torch.stack([u, v], -1), 0.0)
    torch.testing.assert_close(rast[0, ..., :2], uv.float(), atol=2e-5, rtol=0)
    assert torch.allclose(rast[0, ..., 2][covered], torch.tensor(0.25), atol=1e-6)


def test_barycentrics_at_given_pixels_by_hand(glctx, device):
    # Right triangle with w = 1: vertex 0 at pixel (0, 0), vertex 1 at (8, 0), vertex 2 at (0, 8)
    # in an 8x8 image. At centre (x, y): u = 1 - (x + y)/8, v = x/8.
    pos = screen_triangle([(0, 0), (8, 0), (0, 8)], 8, 8)
    rast, rast_db = dr.rasterize(glctx, pos[None].to(device), tri_tensor([[0, 1, 2]], device), (8, 8))
    rast, rast_db = rast.cpu(), rast_db.cpu()
    for row, col in [(0, 0), (2, 3), (4, 1), (0, 6)]:
        x, y = col + 0.5, row + 0.5
        assert rast[0, row, col, 3] == 1.0
        torch.testing.assert_close(rast[0, row, col, :2], torch.tensor([1 - (x + y) / 8, x / 8]), atol=1e-6, rtol=0)
        torch.testing.assert_close(rast_db[0, row, col], torch.tensor([-1 / 8, -1 / 8, 1 / 8, 0.0]), atol=1e-6, rtol=0)
    assert rast[0, 7, 7, 3] == 0  # beyond the hypotenuse


def test_perspective_correct_barycentrics(glctx, device):
    h, w = 24, 24
    pos = screen_triangle([(2, 2), (22, 4), (6, 21)], h, w, z=0.1, wclip=[1.0, 3.0, 0.5])
    tri = tri_tensor([[0, 1, 2]])
    rast, rast_db = dr.rasterize(glctx, pos[None].to(device), tri.to(device), (h, w))
    rast, rast_db = rast.cpu(), rast_db.cpu()
    ids = dr.triangle_index(rast)
    uv, db = ref.barycentrics(pos[None], tri, ids)
    torch.testing.assert_close(rast[..., :2], uv.float(), atol=3e-5, rtol=0)
    torch.testing.assert_close(rast_db, db.float(), atol=1e-5, rtol=1e-4)
    # Perspective-correct: an attribute equal to 1/w... is not affine in screen space; z/w is.
    covered = ids[0] >= 0
    u, v = uv[0, ..., 0], uv[0, ..., 1]
    zw = (u * 0.1 * 1.0 + v * 0.1 * 3.0 + (1 - u - v) * 0.1 * 0.5) / (u * 1.0 + v * 3.0 + (1 - u - v) * 0.5)
    torch.testing.assert_close(rast[0, ..., 2][covered], zw[covered].float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("wclip", [1.0, [1.0, 2.5, 0.6]], ids=["affine", "perspective"])
def test_rast_db_matches_finite_differences_across_pixels(glctx, device, wclip):
    h, w = 64, 64
    pos = screen_triangle([(1, 1), (63, 5), (10, 62)], h, w, wclip=wclip)
    rast, rast_db = dr.rasterize(glctx, pos[None].to(device), tri_tensor([[0, 1, 2]], device), (h, w))
    rast, rast_db = rast[0].cpu(), rast_db[0].cpu()
    cov = rast[..., 3] > 0
    # interior pixels whose 4 neighbours are covered too
    ok = cov[1:-1, 1:-1] & cov[1:-1, 2:] & cov[1:-1, :-2] & cov[2:, 1:-1] & cov[:-2, 1:-1]
    fd_x = (rast[1:-1, 2:, :2] - rast[1:-1, :-2, :2]) / 2
    fd_y = (rast[2:, 1:-1, :2] - rast[:-2, 1:-1, :2]) / 2
    fd = torch.stack([fd_x[..., 0], fd_y[..., 0], fd_x[..., 1], fd_y[..., 1]], -1)[ok]
    an = rast_db[1:-1, 1:-1][ok]
    assert ok.sum() > 500
    # affine: u is linear in pixels, so central differences are exact up to float rounding;
    # perspective: the O(1 px^2) curvature term bounds the difference.
    tol = 2e-5 if wclip == 1.0 else 2e-3 * an.abs().max().item()
    torch.testing.assert_close(an, fd, atol=tol, rtol=0)


def test_empty_images(glctx, device):
    tri = tri_tensor([[0, 1, 2]], device)
    off_screen = torch.tensor([[[2.0, 2.0, 0, 1], [3.0, 2.0, 0, 1], [2.0, 3.0, 0, 1]]], device=device)
    rast, rast_db = dr.rasterize(glctx, off_screen, tri, (5, 9))
    assert torch.count_nonzero(rast) == 0 and torch.count_nonzero(rast_db) == 0
    no_tris = torch.zeros(0, 3, dtype=torch.int32, device=device)
    rast, _ = dr.rasterize(glctx, off_screen, no_tris, (5, 9))
    assert torch.count_nonzero(rast) == 0


def test_depth_test_nearest_wins_regardless_of_order(glctx, device):
    h, w = 16, 16
    near = screen_triangle([(0, 0), (16, 0), (0, 16)], h, w, z=-0.5)
    far = screen_triangle([(0, 0), (16, 0), (16, 16)], h, w, z=0.5)
    tri = tri_tensor([[0, 1, 2], [3, 4, 5]], device)
    for first, second, near_id in [(near, far, 1), (far, near, 2)]:
        pos = torch.cat([first, second])[None].to(device)
        rast, _ = dr.rasterize(glctx, pos, tri, (h, w))
        ids = dr.triangle_index(rast.cpu())[0]
        both = (ref.inside_triangle(near, h, w)[1] > 1e-3) & ref.inside_triangle(near, h, w)[0]
        both &= ref.inside_triangle(far, h, w)[0] & (ref.inside_triangle(far, h, w)[1] > 1e-3)
        assert both.sum() > 10
        assert torch.all(ids[both] == near_id - 1)


def test_depth_tie_goes_to_the_lower_triangle_index(glctx, device):
    """Coplanar surfaces at equal z/w: the triangle with the smaller index in tri wins (GL draws in
    index order with a strict depth test), whatever the order of their vertices in pos."""
    a = screen_triangle([(1, 1), (15, 2), (7, 15)], 16, 16, z=0.1)
    b = screen_triangle([(0, 3), (14, 0), (9, 16)], 16, 16, z=0.1)
    for first, second in ((a, b), (b, a), (a, a)):
        pos = torch.cat([first, second])[None].to(device)
        for tri in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
            rast, _ = dr.rasterize(glctx, pos, tri_tensor(tri, device), (16, 16))
            ids = dr.triangle_index(rast.cpu())[0]
            inside = [ref.inside_triangle(t, 16, 16)[0] for t in (first, second)]
            both = inside[0] & inside[1]
            drawn_first = inside[0] if tri[0][0] == 0 else inside[1]
            assert both.sum() > 20 and (ids[both] == 0).all()
            assert (ids[drawn_first] == 0).all()


def test_instanced_and_range_modes(glctx, device):
    h, w = 12, 12
    a = screen_triangle([(0, 0), (12, 0), (0, 12)], h, w)
    b = screen_triangle([(12, 12), (0, 12), (12, 0)], h, w)
    tri = tri_tensor([[0, 1, 2], [3, 4, 5]], device)
    both = torch.cat([a, b]).to(device)
    # instanced: each image draws both triangles with its own positions; ids are the same
    shifted = both.clone()
    shifted[:, 0] += 0.5 * shifted[:, 3]
    rast_i, _ = dr.rasterize(glctx, torch.stack([both, shifted]), tri, (h, w))
    ids_i = dr.triangle_index(rast_i.cpu())
    assert set(ids_i[0].unique().tolist()) == {0, 1}
    assert set(ids_i[1].unique().tolist()) == {-1, 0, 1}
    # range mode: image 0 shows triangle 1 only, image 1 triangle 0 only; ids stay global
    ranges = torch.tensor([[1, 1], [0, 1]], dtype=torch.int32)
    rast_r, _ = dr.rasterize(glctx, both, tri, (h, w), ranges=ranges)
    ids_r = dr.triangle_index(rast_r.cpu())
    assert set(ids_r[0].unique().tolist()) == {-1, 1}
    assert set(ids_r[1].unique().tolist()) == {-1, 0}
    torch.testing.assert_close(rast_r[0][ids_r[0] == 1], rast_i[0][ids_i[0] == 1])


def test_triangle_id_encoding_above_2_pow_24():
    ids = [0, 5, (1 << 24) - 2, (1 << 24) - 1, 1 << 24, (1 << 24) + 7, 123_456_789, 0x34FFFFFF - 2]
    rast = torch.zeros(1, 1, len(ids) + 1, 4)
    rast[0, 0, : len(ids), 3] = torch.tensor([ref.encode_triangle_id(i) for i in ids])
    decoded = dr.triangle_index(rast)[0, 0]
    assert decoded.tolist() == ids + [-1]
    # monotone in the id, so comparisons of the raw channel still order triangles
    assert torch.all(rast[0, 0, 1 : len(ids), 3] > rast[0, 0, : len(ids) - 1, 3])
    with pytest.raises(TypeError, match="triangle_index: rast must have dtype torch.float32"):
        dr.triangle_index(rast.double())
    with pytest.raises(ValueError, match=r"rast must have shape \[\.\.\., 4\]"):
        dr.triangle_index(rast[..., :3])


def test_triangle_ids_above_2_pow_24_end_to_end(glctx, device):
    """Range mode draws the last two of 2^24 + 2 triangles: GL's primitive ids, the
    kernel's encoding, triangle_index and the kernels' decoders (interpolate, the
    rasterize backward) must all agree on ids 2^24 and 2^24 + 1."""
    big = 1 << 24
    h, w = 8, 8
    lower = screen_triangle([(0, 0), (8, 0), (0, 8)], h, w)
    upper = screen_triangle([(8, 8), (0, 8), (8, 0)], h, w)
    pos = torch.cat([lower, upper])
    small_tri = tri_tensor([[3, 4, 5], [0, 1, 2]])
    tri = torch.zeros(big + 2, 3, dtype=torch.int32)
    tri[big:] = small_tri
    ranges = torch.tensor([[big, 2], [big + 1, 1]], dtype=torch.int32)
    pos_d = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos_d, tri.to(device), (h, w), ranges=ranges)
    ids = dr.triangle_index(rast.detach().cpu())
    assert set(ids[0].unique().tolist()) == {big, big + 1}
    assert set(ids[1].unique().tolist()) == {-1, big + 1}
    bits = rast.detach().cpu()[..., 3].view(torch.int32)
    assert torch.all(bits[ids == big + 1] == 0x4A800000 + big + 2)
    # the same scene with ids 0 and 1 gives the same image apart from the id channel
    pos_s = pos.to(device).requires_grad_(True)
    small_ranges = torch.tensor([[0, 2], [1, 1]], dtype=torch.int32)
    small, small_db = dr.rasterize(glctx, pos_s, small_tri.to(device), (h, w), ranges=small_ranges)
    small_ids = dr.triangle_index(small.detach().cpu())
    assert torch.equal(torch.where(small_ids >= 0, small_ids + big, -1), ids)
    torch.testing.assert_close(rast[..., :3], small[..., :3], atol=0, rtol=0)
    attr = torch.tensor([[0.0], [1.0], [2.0], [10.0], [20.0], [30.0]], device=device)
    out, da = dr.interpolate(attr, rast, tri.to(device), rast_db, diff_attrs="all")
    out_s, da_s = dr.interpolate(attr, small, small_tri.to(device), small_db, diff_attrs="all")
    assert out.abs().sum() > 0
    torch.testing.assert_close(out, out_s, atol=0, rtol=0)
    torch.testing.assert_close(da, da_s, atol=0, rtol=0)
    (grad,) = torch.autograd.grad(out.sum() + da.sum(), pos_d)
    (grad_s,) = torch.autograd.grad(out_s.sum() + da_s.sum(), pos_s)
    assert grad_s.abs().max() > 0
    torch.testing.assert_close(grad, grad_s)


def test_more_images_than_gl_array_layers(glctx, device):
    """Images are drawn one after another, so N is not bounded by GL_MAX_ARRAY_TEXTURE_LAYERS."""
    n = int(glctx.gl.info["GL_MAX_ARRAY_TEXTURE_LAYERS"]) + 3
    pos = screen_triangle([(-1, -1), (3, -1), (-1, 3)], 1, 1).repeat(n, 1, 1)
    pos[1::2, :, 0] += 10 * pos[1::2, :, 3]  # odd images: off screen
    rast, _ = dr.rasterize(glctx, pos.to(device), tri_tensor([[0, 1, 2]], device), (1, 1))
    covered = rast.cpu()[:, 0, 0, 3] > 0
    assert torch.equal(covered, torch.arange(n) % 2 == 0)


@pytest.mark.parametrize("wclip", [1.0, 2.0], ids=["affine", "perspective"])
def test_sub_pixel_triangles_cover_exactly_the_centres_they_contain(glctx, device, wclip):
    """Triangles that cover no pixel centre are culled before GL (most of a dense mesh);
    the ones that do must all arrive. One small triangle per pixel (0.04-0.8 px across),
    jittered around the pixel's centre, every 7th off screen: each pixel shows its
    triangle exactly when the centre lies inside it (pixels within 0.01 px of an edge
    are not judged)."""
    h, w = 24, 40
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centre = torch.stack([xx, yy], -1).reshape(-1, 1, 2)
    size = 0.02 + 0.38 * torch.rand(h * w, 1, 1, generator=g)
    corners = centre + size * (torch.rand(h * w, 3, 2, generator=g) - 0.5) * 2
    corners += 0.3 * (torch.rand(h * w, 1, 2, generator=g) - 0.5)
    corners[::7, :, 0] += 3 * w  # off screen to the right
    xy = corners / torch.tensor([w, h]) * 2 - 1
    pos = torch.cat([xy, torch.zeros(h * w, 3, 1), torch.ones(h * w, 3, 1)], -1).reshape(-1, 4) * wclip
    tri = torch.arange(3 * h * w, dtype=torch.int32).reshape(-1, 3)
    rast, _ = dr.rasterize(glctx, pos[None].to(device), tri.to(device), (h, w))
    ids = dr.triangle_index(rast.cpu())[0]
    expect = torch.full((h, w), -1, dtype=torch.int64)
    judged = torch.ones(h, w, dtype=torch.bool)
    for t in range(h * w):
        inside, margin = ref.inside_triangle(pos[3 * t : 3 * t + 3], h, w)
        expect[inside] = t
        judged &= ~((margin < 0.01) & (margin == margin))
    covered = int((expect >= 0).sum())
    assert covered > 50 and int(judged.sum()) > 0.9 * h * w
    assert torch.equal(ids[judged], expect[judged])


# ---------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("use_db", [False, True])
def test_gradients_match_reference(glctx, device, use_db):
    pos, tri = random_scene()
    h, w = 40, 48
    pos_d = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos_d, tri.to(device), (h, w), grad_db=use_db)
    g = torch.Generator().manual_seed(1)
    g_rast = torch.randn(rast.shape, generator=g)
    g_db = torch.randn(rast_db.shape, generator=g) * 10
    loss = (rast * g_rast.to(device)).sum() + ((rast_db * g_db.to(device)).sum() if use_db else 0)
    (grad,) = torch.autograd.grad(loss, pos_d)
    ids = dr.triangle_index(rast.detach().cpu())
    pos_ref = pos.double().requires_grad_(True)
    uv, db = ref.barycentrics(pos_ref, tri, ids, pos.shape[1])
    torch.testing.assert_close(rast.detach().cpu()[..., :2], uv.float().detach(), atol=5e-5, rtol=0)
    torch.testing.assert_close(rast_db.detach().cpu(), db.float().detach(), atol=2e-5, rtol=1e-3)
    loss_ref = (uv * g_rast[..., :2].double()).sum() + ((db * g_db.double()).sum() if use_db else 0)
    (grad_ref,) = torch.autograd.grad(loss_ref, pos_ref)
    assert grad_ref.abs().max() > 0
    assert torch.all(grad.cpu()[..., 2] == 0)  # z never gets a gradient from rasterize
    scale = grad_ref.abs().max().item()
    torch.testing.assert_close(grad.cpu().double(), grad_ref, atol=2e-4 * scale, rtol=1e-3)


def test_gradients_range_mode_match_reference(glctx, device):
    pos, tri = random_scene(num_tris=8, num_images=1, seed=3)
    pos = pos[0]
    ranges = torch.tensor([[0, 5], [3, 5]], dtype=torch.int32)
    pos_d = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos_d, tri.to(device), (32, 32), ranges=ranges)
    g = torch.randn(rast.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((rast * g.to(device)).sum() + rast_db.sum(), pos_d)
    pos_ref = pos.double().requires_grad_(True)
    uv, db = ref.barycentrics(pos_ref, tri, dr.triangle_index(rast.detach().cpu()))
    (grad_ref,) = torch.autograd.grad((uv * g[..., :2].double()).sum() + db.sum(), pos_ref)
    scale = grad_ref.abs().max().item()
    torch.testing.assert_close(grad.cpu().double(), grad_ref, atol=2e-4 * scale, rtol=1e-3)


def sliver_scene(count, seed):
    """`count` images of one random sliver each: the third vertex within 1e-3 of the line through the
    other two, random depths in [-0.6, 0.8], w in [1, 2]."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(count, 3, 4, generator=g) * 2 - 1
    t = torch.rand(count, 1, generator=g)
    p[:, 2, :2] = p[:, 0, :2] * t + p[:, 1, :2] * (1 - t) + (torch.rand(count, 2, generator=g) - 0.5) * 1e-3
    p[..., 2] = torch.rand(count, 3, generator=g) * 1.4 - 0.6
    p[..., 3] = 1.0 + torch.rand(count, 3, generator=g)
    p[..., :3] *= p[..., 3:]
    return p.contiguous(), tri_tensor([[0, 1, 2]])


def test_sliver_barycentrics_lie_within_the_triangle(glctx, device):
    """GL covers pixel centres of slivers that the closed form puts outside the triangle (before: u
    down to -3.4, z/w far outside the vertices'); (u, v, z/w) are those of a point in the triangle,
    and the gradients are those of the clamped values (against the reference) and finite."""
    pos, tri = sliver_scene(400, seed=0)
    h = w = 64
    pos_d = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos_d, tri.to(device), (h, w))
    covered = rast[..., 3] > 0
    u, v = rast[..., 0][covered], rast[..., 1][covered]
    assert covered.sum() > 30
    assert u.min() >= 0 and v.min() >= 0 and (u + v).max() <= 1 + 1e-6
    zw = pos[..., 2] / pos[..., 3]
    z = rast[..., 2].cpu()
    lo = zw.min(1).values.view(-1, 1, 1).expand_as(z)[covered.cpu()]
    hi = zw.max(1).values.view(-1, 1, 1).expand_as(z)[covered.cpu()]
    assert (z[covered.cpu()] >= lo - 1e-6).all() and (z[covered.cpu()] <= hi + 1e-6).all()
    g_rast = torch.randn(rast.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((rast * g_rast.to(device)).sum() + rast_db.sum(), pos_d, retain_graph=True)
    assert torch.isfinite(grad).all() and torch.isfinite(rast_db).all()
    (grad_uv,) = torch.autograd.grad((rast * g_rast.to(device)).sum(), pos_d)
    # against the reference, on the images that show their sliver
    shown = covered.any(2).any(1).cpu()
    ids = dr.triangle_index(rast.detach().cpu()[shown])
    pos_ref = pos[shown].double().requires_grad_(True)
    uv, _ = ref.barycentrics(pos_ref, tri, ids, 3)
    clamped = ((uv.detach() == 0).any(-1) | (uv.detach().sum(-1) >= 1 - 1e-12)) & (ids >= 0)
    assert clamped.sum() >= 2  # the scene has pixels that need the clamp
    torch.testing.assert_close(rast.detach().cpu()[shown][..., :2], uv.float().detach(), atol=1e-4, rtol=0)
    (grad_ref,) = torch.autograd.grad((uv * g_rast[shown][..., :2].double()).sum(), pos_ref)
    scale = grad_ref.abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(grad_uv.cpu()[shown].double() / scale, grad_ref / scale, atol=1e-3, rtol=1e-3)
    assert torch.all(grad_uv.cpu()[~shown] == 0)


def test_huge_but_finite_w(glctx, device):
    """A vertex with w near the float limit: the closed form runs in double, so the covered pixels get
    the barycentrics and depth of a moderate w (not zeros from an overflow), and finite gradients."""
    h = w = 16
    rows = []
    for big in (1e8, 1e30, 3.4e38):
        rows.append([[-0.9, -0.9, 0.0, 1.0], [0.9, -0.9, 0.0, 1.0], [0.0, 0.9 * big, 0.5 * big, big]])
    pos = torch.tensor(rows).to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos, tri_tensor([[0, 1, 2]], device), (h, w))
    covered = rast[..., 3] > 0
    assert covered.all(0).sum() > 10
    for k in (1, 2):  # the farther vertex contributes nothing measurable beyond w = 1e8
        torch.testing.assert_close(rast[k][covered.all(0)], rast[0][covered.all(0)], atol=2e-4, rtol=0)
        torch.testing.assert_close(rast_db[k][covered.all(0)], rast_db[0][covered.all(0)], atol=1e-3, rtol=1e-3)
    (rast[..., :2].sum() + rast_db.sum()).backward()
    assert torch.isfinite(pos.grad).all()
    # every coordinate near the float limit, or tiny: GL sees the corners scaled by a power of two
    # (before, its clipping overflowed or its products underflowed, and it covered nothing)
    base = torch.tensor([[[-0.9, -0.9, 0.0, 1.0], [0.9, -0.9, 0.0, 1.0], [0.0, 0.9, 0.5, 1.0]]])
    plain, plain_db = dr.rasterize(glctx, base.to(device), tri_tensor([[0, 1, 2]], device), (h, w))
    for scale in (3.4e38, 1e-30):
        rast, rast_db = dr.rasterize(glctx, (base * scale).to(device), tri_tensor([[0, 1, 2]], device), (h, w))
        assert torch.equal(rast[..., 3], plain[..., 3]) and (plain[..., 3] > 0).sum() > 50
        torch.testing.assert_close(rast, plain, atol=1e-6, rtol=0)
        torch.testing.assert_close(rast_db, plain_db, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("through", ["uv", "db"])
def test_gradients_match_finite_differences(glctx, device, through):
    """Central differences of the rendered values at pixels that stay covered."""
    h, w = 32, 32
    pos = screen_triangle([(3, 2), (30, 6), (8, 29)], h, w, wclip=[1.0, 2.0, 0.7]).double()
    tri = tri_tensor([[0, 1, 2]], device)
    weights = torch.randn(1, h, w, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def render(p):
        rast, db = dr.rasterize(glctx, p.float()[None].to(device), tri, (h, w))
        return rast.cpu().double(), db.cpu().double()

    rast0, _ = render(pos)
    _, margin = ref.inside_triangle(pos.float(), h, w)
    stable = ((rast0[0, ..., 3] > 0) & (margin > 1.5))[None, ..., None]  # coverage cannot change there

    def loss(p):
        rast, db = render(p)
        value = rast[..., :2] if through == "uv" else db
        return (value * weights[..., : value.shape[-1]] * stable).sum()

    p_d = pos.float().to(device).requires_grad_(True)
    rast, db = dr.rasterize(glctx, p_d[None], tri, (h, w))
    value = rast[..., :2] if through == "uv" else db
    (grad,) = torch.autograd.grad((value * (weights[..., : value.shape[-1]] * stable).float().to(device)).sum(), p_d)
    eps = 1e-3
    fd = torch.zeros_like(pos)
    for i in range(3):
        for k in (0, 1, 3):
            dp = torch.zeros_like(pos)
            dp[i, k] = eps
            fd[i, k] = (loss(pos + dp) - loss(pos - dp)) / (2 * eps)
    scale = fd.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(grad.cpu().double(), fd, atol=1e-2 * scale, rtol=1e-2)


def test_vertex_behind_camera(glctx, device):
    """A triangle crossing w = 0 is clipped by GL; barycentrics stay exact (projective formula)."""
    h, w = 24, 24
    pos = torch.tensor([[-0.5, -0.5, 0.0, 1.0], [0.6, -0.4, 0.0, 1.0], [0.2, 0.9, -0.5, -0.4]])
    tri = tri_tensor([[0, 1, 2]])
    rast, rast_db = dr.rasterize(glctx, pos[None].to(device), tri.to(device), (h, w))
    ids = dr.triangle_index(rast.cpu())
    assert (ids >= 0).sum() > 20
    uv, db = ref.barycentrics(pos[None], tri, ids)
    torch.testing.assert_close(rast.cpu()[..., :2], uv.float(), atol=5e-5, rtol=1e-4)
    assert torch.all((uv[..., 0] > -1e-4)[ids >= 0]) and torch.all((uv[..., 1] > -1e-4)[ids >= 0])


# ---------------------------------------------------------------------------
# Context and validation


def test_manual_and_automatic_contexts_on_one_thread():
    """A call through an automatic context leaves a manual one current; a manual context that is
    not current raises instead of reading a stale target."""
    pos = screen_triangle([(0, 0), (8, 0), (0, 8)], 8, 8)[None]
    tri = tri_tensor([[0, 1, 2]], "cpu")
    with dr.RasterizeGLContext(device="cpu") as automatic, dr.RasterizeGLContext(device="cpu", mode="manual") as manual:
        manual.set_context()
        first = dr.rasterize(manual, pos, tri, (8, 8))[0]
        assert torch.equal(dr.rasterize(automatic, pos, tri, (8, 8))[0], first)
        assert torch.equal(dr.rasterize(manual, pos, tri, (8, 8))[0], first)
        manual.release_context()
        with pytest.raises(RuntimeError, match=r"not current on this thread \(mode='manual': call set_context"):
            dr.rasterize(manual, pos, tri, (8, 8))


def test_output_db_false_and_manual_mode(device):
    ctx = dr.RasterizeGLContext(output_db=False, mode="manual", device=device)
    try:
        ctx.set_context()
        pos = screen_triangle([(0, 0), (8, 0), (0, 8)], 8, 8)[None].to(device)
        rast, rast_db = dr.rasterize(ctx, pos, tri_tensor([[0, 1, 2]], device), (8, 8))
        ctx.release_context()
        assert rast_db.shape == (1, 8, 8, 0)
        assert (rast[..., 3] > 0).sum() == 28  # centres with x + y < 8
        assert "llvmpipe" in ctx.info["renderer"] or device.type == "cuda"
    finally:
        ctx.release()
    ctx.release()  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        dr.rasterize(ctx, pos, tri_tensor([[0, 1, 2]], device), (8, 8))


def test_context_bound_to_its_thread(glctx, device):
    pos = torch.zeros(1, 3, 4, device=device)
    tri = tri_tensor([[0, 1, 2]], device)
    errors = []

    def worker():
        try:
            dr.rasterize(glctx, pos, tri, (4, 4))
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors and "another thread" in errors[0]


def test_non_finite_positions_do_not_crash(glctx, device):
    """NaN / inf / w = 0 vertices: no crash, finite outputs and gradients, the finite
    triangles of the same image and the other images unaffected."""
    nan, inf = float("nan"), float("inf")
    h, w = 8, 8
    good = screen_triangle([(0, 0), (8, 0), (0, 8)], h, w)
    bad = [
        [[nan, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1]],
        [[inf, 0, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]],
        [[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, -inf]],
        [[-1, -1, 0, 0], [1, -1, 0, 0], [-1, 1, 0, 0]],
    ]
    tri = tri_tensor([[0, 1, 2], [3, 4, 5]], device)
    pos = torch.stack([torch.cat([good, torch.tensor(b)]) for b in bad])
    pos_d = pos.to(device).requires_grad_(True)
    rast, rast_db = dr.rasterize(glctx, pos_d, tri, (h, w))
    out, out_da = dr.interpolate(torch.rand(6, 2, device=device), rast, tri, rast_db, diff_attrs="all")
    (grad,) = torch.autograd.grad(rast.sum() + rast_db.sum() + out.sum() + out_da.sum(), pos_d)
    for t in (rast, rast_db, out, out_da, grad):
        assert torch.isfinite(t).all()
    alone, alone_db = dr.rasterize(glctx, good[None].to(device), tri[:1], (h, w))
    for n in range(len(bad)):
        torch.testing.assert_close(rast[n].detach(), alone[0], atol=0, rtol=0)
        torch.testing.assert_close(rast_db[n].detach(), alone_db[0], atol=0, rtol=0)


@pytest.mark.parametrize(
    "pos, tri, res, ranges, error, match",
    [
        (torch.zeros(1, 3, 4, dtype=torch.float64), [[0, 1, 2]], (4, 4), None, TypeError, "pos must have dtype"),
        (torch.zeros(1, 3, 3), [[0, 1, 2]], (4, 4), None, ValueError, r"pos must have shape \[N, V, 4\]"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), None, ValueError, "needs ranges"),
        (torch.zeros(1, 3, 4), [[0, 1, 3]], (4, 4), None, ValueError, "vertex index 3, outside"),
        (torch.zeros(1, 3, 4), [[0, -1, 2]], (4, 4), None, ValueError, "vertex index -1"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (0, 4), None, ValueError, "resolution"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (4, 10**6), None, ValueError, "GL limit"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (4.5, 4), None, TypeError, "pair of ints"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], 4, None, TypeError, "pair of ints"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), [[0, 2]], ValueError, "outside the 1 triangles"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), "int64", ValueError, "ranges must be an int32"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (True, True), None, TypeError, "pair of ints"),
        (torch.zeros(4), [[0, 1, 2]], (4, 4), None, ValueError, r"pos must have shape \[N, V, 4\]"),
        (torch.zeros(1, 1, 3, 4), [[0, 1, 2]], (4, 4), None, ValueError, r"pos must have shape \[N, V, 4\]"),
        (torch.zeros(1, 3, 4), [[0, 1]], (4, 4), None, ValueError, r"tri must have shape \[T, 3\]"),
        (torch.zeros(1, 3, 4), [0, 1, 2], (4, 4), None, ValueError, r"tri must have shape \[T, 3\]"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (-3, 4), None, ValueError, "resolution"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], (4, 4, 4), None, TypeError, "pair of ints"),
        (torch.zeros(1, 3, 4), [[0, 1, 2]], "max+1", None, ValueError, "GL limit"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), [[-1, 1]], ValueError, r"range \(first=-1"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), [[0, -1]], ValueError, "count=-1"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), [[0, 1, 1]], ValueError, r"ranges must be an int32 tensor of shape"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), "meta", ValueError, "ranges must be on the CPU"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), "list", ValueError, "ranges must be an int32 tensor"),
        (torch.zeros(3, 4), [[0, 1, 2]], (4, 4), "empty", ValueError, "batch is empty"),
        (torch.zeros(0, 3, 4), [[0, 1, 2]], (4, 4), None, ValueError, "batch is empty"),
    ],
)
def test_invalid_arguments(cpu_glctx, pos, tri, res, ranges, error, match):
    tri = torch.tensor(tri, dtype=torch.int32)
    if res == "max+1":
        res = (cpu_glctx.max_resolution + 1, 1)
    special = {
        "int64": lambda: torch.zeros(1, 2, dtype=torch.int64),
        "meta": lambda: torch.zeros(1, 2, dtype=torch.int32, device="meta"),
        "list": lambda: [[0, 1]],
        "empty": lambda: torch.zeros(0, 2, dtype=torch.int32),
    }
    if isinstance(ranges, str):
        ranges = special[ranges]()
    elif ranges is not None:
        ranges = torch.tensor(ranges, dtype=torch.int32)
    with pytest.raises(error, match=match):
        dr.rasterize(cpu_glctx, pos, tri, res, ranges=ranges)
    with pytest.raises(error, match=match):  # the peeler validates the same way
        dr.DepthPeeler(cpu_glctx, pos, tri, res, ranges=ranges)


def test_invalid_types_and_devices(cpu_glctx):
    glctx = cpu_glctx
    tri = tri_tensor([[0, 1, 2]])
    with pytest.raises(TypeError, match="tri must have dtype torch.int32"):
        dr.rasterize(glctx, torch.zeros(1, 3, 4), tri.long(), (4, 4))
    with pytest.raises(TypeError, match="glctx must be a RasterizeGLContext"):
        dr.rasterize("ctx", torch.zeros(1, 3, 4), tri, (4, 4))
    with pytest.raises(TypeError, match="pos must be a torch.Tensor"):
        dr.rasterize(glctx, [[0, 0, 0, 1]], tri, (4, 4))
    with pytest.raises(ValueError, match="rasterize: tri must be on a CPU or CUDA device, got .* device meta"):
        dr.rasterize(glctx, torch.zeros(1, 3, 4), tri.to("meta"), (4, 4))
    with pytest.raises(ValueError, match="rasterize: pos must be on a CPU or CUDA device"):
        dr.rasterize(glctx, torch.zeros(1, 3, 4, device="meta"), tri.to("meta"), (4, 4))
    with pytest.raises(ValueError, match="mode must be one of"):
        dr.RasterizeGLContext(mode="auto")


def test_reused_and_modified_inputs_are_uploaded_correctly(glctx, device):
    """In-place changes of pos and tri between calls are always seen."""
    h, w = 8, 8
    pos = torch.cat([screen_triangle([(0, 0), (8, 0), (0, 8)], h, w), screen_triangle([(8, 8), (0, 8), (8, 0)], h, w)])
    pos = pos[None].to(device)
    tri = tri_tensor([[0, 1, 2]], device)
    first, _ = dr.rasterize(glctx, pos, tri, (h, w))
    tri[0] = torch.tensor([3, 4, 5])
    second, _ = dr.rasterize(glctx, pos, tri, (h, w))
    pos[0, 3:, 0] += 100.0  # moves the second triangle off screen, in place
    third, _ = dr.rasterize(glctx, pos, tri, (h, w))
    pos.data[0, 3:, 0] -= 100.0  # `.data` changes bypass torch's version counter
    fourth, _ = dr.rasterize(glctx, pos, tri, (h, w))
    covered = [(r[..., 3] > 0).sum().item() for r in (first, second, third, fourth)]
    assert covered[0] == 28 and covered[1] >= 28 and covered[2] == 0 and covered[3] == covered[1]


def test_gradient_accumulation_per_thread_and_shared(glctx, device, monkeypatch):
    """Vertex gradients come out the same whether each host thread accumulates into its
    own copy (the default while memory allows) or all share one buffer with atomics."""
    pos, tri = random_scene(num_tris=20, num_images=2, seed=9)
    attr = torch.randn(pos.shape[1], 3)

    def grads():
        p = pos.to(device).requires_grad_(True)
        a = attr.to(device).requires_grad_(True)
        rast, rast_db = dr.rasterize(glctx, p, tri.to(device), (48, 40))
        out, da = dr.interpolate(a, rast, tri.to(device), rast_db, diff_attrs="all")
        (out.square().sum() + da.square().sum()).backward()
        return p.grad.cpu(), a.grad.cpu()

    per_thread = grads()
    monkeypatch.setenv("GLRAST_ACCUMULATOR_MB", "0")
    shared = grads()
    for a, b in zip(per_thread, shared):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)


def test_ranges_with_instanced_pos_are_ignored_with_one_warning(cpu_glctx, caplog, monkeypatch):
    """As nvdiffrast documents: ranges only matter in range mode; instanced mode ignores them."""
    monkeypatch.setattr(dr.raster, "_ranges_warned", False)
    pos, tri = random_scene(num_tris=4, num_images=2)
    plain, _ = dr.rasterize(cpu_glctx, pos, tri, (8, 8))
    ranges = torch.tensor([[0, 1], [1, 1]], dtype=torch.int32)
    with caplog.at_level("WARNING", logger="glrast"):
        for _ in range(2):
            rast, _ = dr.rasterize(cpu_glctx, pos, tri, (8, 8), ranges=ranges)
            assert torch.equal(rast, plain)
    warnings = [r for r in caplog.records if "ranges is ignored" in r.getMessage()]
    assert len(warnings) == 1 and "rasterize" in warnings[0].getMessage()
