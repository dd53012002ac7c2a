"""antialias: reference match, coverage gradients against exact box coverage, silhouette
detection, continuity, an optimisation through coverage alone, the topology hash, validation."""

import math

import pytest
import reference as ref
import torch
from scenes import random_scene, screen_triangle, tri_tensor

import glrast as dr
from glrast import camera, mesh


def sphere_scene(num_images=2, seed=0):
    """An icosphere (shared vertices) seen from different sides, a far backdrop triangle and a few
    random triangles in front: silhouettes against the background, against farther surfaces,
    interior edges. Returns pos [N, V, 4] (float32, clip space) and tri [T, 3]."""
    verts, tri = mesh.icosphere(2)
    g = torch.Generator().manual_seed(seed)
    proj = camera.perspective(50.0, 1.2, 0.1, 10.0)
    images = []
    for _ in range(num_images):
        eye = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0) * 3.2
        images.append(camera.transform(proj @ camera.look_at(eye.tolist(), (0.1, -0.1, 0.0)), verts)[0])
    sphere = torch.stack(images)
    backdrop = torch.tensor([[-3.0, -3.0, 0.9, 1.0], [3.5, -2.0, 0.9, 1.0], [0.0, 3.5, 0.9, 1.0]])
    front, front_tri = random_scene(num_tris=3, num_images=num_images, seed=seed + 1)
    front[..., 2] = front[..., 2] * 0.2 - 0.9 * front[..., 3]  # in front of the sphere
    pos = torch.cat([sphere, backdrop.expand(num_images, 3, 4), front], 1)
    v = sphere.shape[1]
    tri = torch.cat([tri, tri_tensor([[v, v + 1, v + 2]]), front_tri + v + 3])
    return pos.contiguous(), tri


def to_range_mode(pos, tri):
    """The same images in range mode: [N·V, 4] positions, per-image copies of tri, ranges."""
    n, v = pos.shape[:2]
    t = tri.shape[0]
    tris = torch.cat([tri + k * v for k in range(n)])
    ranges = torch.tensor([[k * t, t] for k in range(n)], dtype=torch.int32)
    return pos.reshape(n * v, 4), tris, ranges


def render_ids(glctx, device, pos, tri, res, ranges=None):
    rast, _ = dr.rasterize(glctx, pos.to(device), tri.to(device), res, ranges=ranges)
    return rast


def mask_colour(rast):
    """1 where covered, 0 on the background: antialiasing it gives coverage."""
    return (rast[..., 3:] > 0).float()


# ---------------------------------------------------------------------------
# Against the plain-torch reference


@pytest.mark.parametrize(
    "mode,res,shared_accumulator",
    [("instanced", (24, 32), False), ("range", (17, 23), False), ("instanced", (1, 9), False),
     ("instanced", (24, 32), True)],
)  # fmt: skip
def test_values_and_gradients_match_reference(glctx, device, mode, res, shared_accumulator, monkeypatch):
    """shared_accumulator: no memory for per-thread copies, the pos gradient is scattered with atomics."""
    if shared_accumulator:
        monkeypatch.setenv("GLRAST_ACCUMULATOR_MB", "0")
    pos, tri = sphere_scene()
    ranges = None
    if mode == "range":
        pos, tri, ranges = to_range_mode(pos, tri)
    rast = render_ids(glctx, device, pos, tri, res, ranges)
    n = rast.shape[0]
    g = torch.Generator().manual_seed(3)
    color = torch.rand(n, *res, 3, generator=g)
    w_out = torch.randn(n, *res, 3, generator=g)
    boost = 2.5
    inputs = [color.to(device).requires_grad_(True), pos.to(device).requires_grad_(True)]
    out = dr.antialias(inputs[0], rast, inputs[1], tri.to(device), pos_gradient_boost=boost)
    grads = torch.autograd.grad((out * w_out.to(device)).sum(), inputs)

    ref_inputs = [color.double().requires_grad_(True), pos.double().requires_grad_(True)]
    out_ref = ref.antialias(ref_inputs[0], rast.cpu(), ref_inputs[1], tri, pos_gradient_boost=boost)
    grads_ref = torch.autograd.grad((out_ref * w_out.double()).sum(), ref_inputs, allow_unused=True)
    grads_ref = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(ref_inputs, grads_ref)]

    assert out.shape == color.shape
    changed = (out_ref != color.double()).any(-1)
    if res[0] > 1:
        assert changed.sum() > 20  # the scene has silhouettes
    torch.testing.assert_close(out.cpu().double(), out_ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(grads[0].cpu().double(), grads_ref[0], atol=2e-5, rtol=0)
    scale = grads_ref[1].abs().max().item() + 1e-6
    torch.testing.assert_close(grads[1].cpu().double(), grads_ref[1], atol=1e-4 * scale, rtol=1e-3)
    assert torch.all(grads[1][..., 2] == 0)  # depth never moves a silhouette


def test_untouched_pixels_are_bit_identical(glctx, device):
    pos, tri = sphere_scene(seed=5)
    rast = render_ids(glctx, device, pos, tri, (20, 24))
    g = torch.Generator().manual_seed(0)
    color = torch.randn(2, 20, 24, 4, generator=g)
    color[color.abs() < 0.3] = -0.0  # signed zeros would lose their sign in any `c + 0`
    out = dr.antialias(color.to(device), rast, pos.to(device), tri.to(device)).cpu()
    changed = (out.view(torch.int32) != color.view(torch.int32)).any(-1)
    expected = (ref.antialias(color, rast.cpu(), pos, tri) != color.double()).any(-1)
    assert changed.any() and torch.equal(changed, expected)


def test_reused_topology_hash(glctx, device):
    pos, tri = sphere_scene(seed=2)
    pos, tri = pos.to(device), tri.to(device)
    rast = render_ids(glctx, device, pos, tri, (16, 16))
    color = torch.rand(2, 16, 16, 3, device=device)
    topo = dr.antialias_construct_topology_hash(tri)
    assert "TopologyHash" in repr(topo)
    fresh = dr.antialias(color, rast, pos, tri)
    for _ in range(2):
        assert torch.equal(dr.antialias(color, rast, pos, tri.clone(), topology_hash=topo), fresh)
    other = tri.flip(0).contiguous()
    with pytest.raises(ValueError, match="topology_hash was built for a different tri"):
        dr.antialias(color, rast, pos, other, topology_hash=topo)
    with pytest.raises(ValueError, match="topology_hash was built for a different tri"):
        dr.antialias(color, rast, pos, tri[:-1], topology_hash=topo)


def test_topology_hash_holds_every_edge_and_triangle(device):
    verts, tri = mesh.icosphere(1)
    # a non-manifold fan (three triangles on edge 0-1), a degenerate triangle and a repeated triangle
    tri = torch.cat([tri, tri_tensor([[0, 1, 3], [5, 5, 7], [2, 4, 6], [2, 4, 6]])])
    topo = dr.antialias_construct_topology_hash(tri.to(device))
    keys, tris = topo.keys.cpu(), topo.tris.cpu()
    used = keys >= 0
    assert used.sum() <= topo.capacity // 2
    found: dict = {}
    for key, t in zip(keys[used].tolist(), tris[used].tolist()):
        found.setdefault((key >> 32, key & 0xFFFFFFFF), []).append(t)
    expected = ref.edge_triangles(tri)
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}


# ---------------------------------------------------------------------------
# Silhouettes


def test_interior_edges_of_a_closed_mesh_do_not_blend(glctx, device):
    verts, tri = mesh.icosphere(3)
    mvp = camera.perspective(40.0, 1.0, 0.1, 10.0) @ camera.look_at((0.4, 0.8, 3.0), (0.0, 0.0, 0.0))
    pos = camera.transform(mvp, verts)
    res = (40, 40)
    rast = render_ids(glctx, device, pos, tri, res)
    covered = (rast[..., 3] > 0).cpu()
    color = torch.rand(1, *res, 3, generator=torch.Generator().manual_seed(1))
    out = dr.antialias(color.to(device), rast, pos.to(device), tri.to(device)).cpu()
    changed = (out != color).any(-1)
    # Only pixels with a differently covered 4-neighbour (the outline) may change.
    pad = torch.nn.functional.pad(covered.float(), (1, 1, 1, 1), mode="replicate")
    outline = (pad[:, 1:-1, :-2] != covered) | (pad[:, 1:-1, 2:] != covered)
    outline |= (pad[:, :-2, 1:-1] != covered) | (pad[:, 2:, 1:-1] != covered)
    assert not (changed & ~outline).any()
    # Triangles near the outline of this dense mesh are thinner than a pixel, so the triangle at the
    # outline pixel rarely holds the silhouette edge itself: the walk over the mesh must find it.
    assert changed.sum() > 0.4 * outline.sum()

    # The same mesh with every vertex duplicated per triangle: every edge is a silhouette.
    soup = pos[:, tri.long().flatten()].contiguous()
    soup_tri = torch.arange(3 * tri.shape[0], dtype=torch.int32).view(-1, 3)
    soup_out = dr.antialias(color.to(device), rast, soup.to(device), soup_tri.to(device)).cpu()
    soup_changed = (soup_out != color).any(-1)
    assert (soup_changed & ~outline).sum() > 30


def two_layers(near_left_x, far_right_x, h=6, w=16):
    """A far triangle F covering x < far_right_x and a near triangle N covering x > near_left_x
    (vertical edges; the third vertices far outside the image); no shared vertices."""
    far = screen_triangle([(-60, 3), (far_right_x, -60), (far_right_x, 60)], h, w, z=0.5)
    near = screen_triangle([(80, 3), (near_left_x, -60), (near_left_x, 60)], h, w, z=-0.5)
    return torch.cat([far, near])[None], tri_tensor([[0, 1, 2], [3, 4, 5]])


def test_edge_against_farther_surface_blends_and_occluded_edge_does_not(glctx, device):
    h, w = 6, 16
    pos, tri = two_layers(6.7, 10.3, h, w)  # F's edge at x = 10.3 lies under N
    pos = pos.to(device).requires_grad_(True)
    rast = render_ids(glctx, device, pos.detach(), tri, (h, w))
    ids = dr.triangle_index(rast.cpu())[0]
    assert torch.all(ids[:, :7] == 0) and torch.all(ids[:, 7:] == 1)
    c_far, c_near = torch.tensor([0.2, 0.9]), torch.tensor([1.0, -0.4])
    color = torch.where(ids[None, ..., None] == 0, c_far, c_near).to(device)
    out = dr.antialias(color, rast, pos, tri.to(device))
    # N owns the pair (6, 7); its edge crosses at dc = 0.8 from column 7's centre: column 6 takes 0.3 of N.
    expected = color.clone()
    expected[0, :, 6] = 0.7 * c_far.to(device) + 0.3 * c_near.to(device)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(out[..., 0].sum(), pos)
    assert torch.all(grad[0, :3] == 0)  # F's hidden edge has no say
    # moving N's edge right turns column 6 from N's colour back to F's in every row:
    # d(sum of channel 0)/d(edge x in pixels) = h (c_far - c_near); clip x is W/2 pixels per unit.
    edge_dx = (grad[0, 4, 0] + grad[0, 5, 0]).item() * 2 / w
    assert edge_dx == pytest.approx(h * (0.2 - 1.0), rel=1e-4)


def folded_pair(fold: bool, h=8, w=16):
    """Triangles A (near, left of the shared edge x = 8.3) and B sharing that edge (vertex indices
    1, 2); B continues to the right, or folds back behind A (fold=True). A far backdrop C (separate
    vertices) fills the image behind both."""
    b_x = -6.0 if fold else 26.0
    pts = screen_triangle([(-10, 4), (8.3, -20), (8.3, 28)], h, w, z=0.0)
    b3 = screen_triangle([(b_x, 4)], h, w, z=0.3)
    back = screen_triangle([(-50, -50), (80, -50), (0, 80)], h, w, z=0.8)
    return torch.cat([pts, b3, back])[None], tri_tensor([[0, 1, 2], [2, 1, 3], [4, 5, 6]])


@pytest.mark.parametrize("fold", [False, True])
def test_folded_neighbour_makes_a_silhouette(glctx, device, fold):
    h, w = 8, 16
    pos, tri = folded_pair(fold, h, w)
    rast = render_ids(glctx, device, pos, tri, (h, w))
    ids = dr.triangle_index(rast.cpu())[0]
    assert torch.all(ids[:, 8] == (2 if fold else 1)) and torch.all(ids[:, 7] == 0)
    color = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))
    out = dr.antialias(color.to(device), rast, pos.to(device), tri.to(device)).cpu()
    changed = (out != color).any(-1)[0]
    if fold:  # A's edge is a silhouette against C: dc = 0.8 from A's pixel, column 8 takes 0.3 of A
        assert changed[:, 8].all() and changed.sum() == h
        torch.testing.assert_close(out[0, :, 8], 0.7 * color[0, :, 8] + 0.3 * color[0, :, 7])
    else:
        assert not changed.any()


def test_non_manifold_edge_is_interior_when_a_neighbour_continues_it(glctx, device):
    h, w = 8, 16
    pos, tri = folded_pair(False, h, w)
    # a third triangle on the shared edge, folded behind A: B still continues the surface
    fan = torch.cat([pos[0], screen_triangle([(-3, 2)], h, w, z=0.5)])[None]
    tri = torch.cat([tri, tri_tensor([[1, 2, 7]])])
    rast = render_ids(glctx, device, fan, tri, (h, w))
    color = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))
    out = dr.antialias(color.to(device), rast, fan.to(device), tri.to(device)).cpu()
    assert torch.equal(out, color)


def test_vertex_behind_the_camera_blends_like_the_clipped_polygon(glctx, device):
    """A triangle with one vertex behind the camera (w < 0; GL clips it at w = 0, z = 0 here) gives
    the same image as the polygon clipped by hand just in front of the camera (two triangles)."""
    h, w = 16, 16
    ab = screen_triangle([(3.3, 4.2), (12.6, 6.1)], h, w)
    behind = torch.tensor([0.3, 1.0, 0.0, -0.5])

    def towards_behind(p, w_new=0.02):
        return p + (p[3] - w_new) / (p[3] - behind[3]) * (behind - p)

    single = torch.cat([ab, behind[None]])[None]
    clipped = torch.stack([ab[0], ab[1], towards_behind(ab[1]), towards_behind(ab[0])])[None]
    images, masks = [], []
    for pos, tri in ((single, [[0, 1, 2]]), (clipped, [[0, 1, 2], [0, 2, 3]])):
        tri = tri_tensor(tri, device)
        rast = render_ids(glctx, device, pos, tri, (h, w))
        masks.append(mask_colour(rast).cpu())
        images.append(dr.antialias(mask_colour(rast), rast, pos.to(device), tri).cpu())
    assert torch.equal(masks[0], masks[1]) and (images[0] != masks[0]).sum() > 10
    torch.testing.assert_close(images[0], images[1], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------
# Coverage: continuity and gradients


def triangle_pos(points, wclip, h, w, dtype=torch.float32):
    """Clip-space positions [len(points), 4] of pixel positions with the given w."""
    return screen_triangle(points, h, w, wclip=wclip).to(dtype)


def projected(pos, h, w):
    return [((p[0] / p[3] + 1) / 2 * w, (p[1] / p[3] + 1) / 2 * h) for p in pos.tolist()]


def test_image_is_continuous_as_an_edge_sweeps_across_pixel_centres(glctx, device):
    """A triangle with a sliver (0.4 px wide) attached along its moving edge: as the edge sweeps
    across pixel centres, the covering triangle of those centres switches between the two, and the
    silhouette (the sliver's outer edges) must still blend without jumps."""
    h, w = 12, 12
    tri = tri_tensor([[0, 1, 2], [1, 3, 2]]).to(device)
    step = 0.05
    prev_aa = prev_alias = None
    max_aa = max_alias = 0.0
    for k in range(41):  # vertex 1 moves 2 pixels right: the long edge crosses several centres per row
        x = 7.0 + k * step
        pts = [(1.2, 1.3), (x, 2.1), (3.1, 10.6), ((x + 3.1) / 2 + 0.4, 6.35)]
        pos = triangle_pos(pts, [1.0] * 4, h, w)[None].to(device)
        rast = render_ids(glctx, device, pos, tri, (h, w))
        color = mask_colour(rast)
        aa = dr.antialias(color, rast, pos, tri).cpu()
        if prev_aa is not None:
            max_aa = max(max_aa, (aa - prev_aa).abs().max().item())
            max_alias = max(max_alias, (color.cpu() - prev_alias).abs().max().item())
        prev_aa, prev_alias = aa, color.cpu()
    assert max_alias == 1.0  # plain rasterization jumps
    assert max_aa < 2 * step  # the antialiased image moves by at most about the edge's own motion


def test_gradient_matches_finite_differences_of_the_op(glctx, device):
    h, w = 16, 16
    pos0 = triangle_pos([(2.3, 3.1), (13.2, 5.4), (6.1, 14.2)], [0.8, 1.3, 1.1], h, w)[None]
    tri = tri_tensor([[0, 1, 2]]).to(device)
    weights = torch.rand(1, h, w, 1, generator=torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        direction = torch.randn(1, 3, 4, generator=g) * torch.tensor([1.0, 1.0, 0.0, 0.3]) * 0.01
        pos = pos0.to(device).requires_grad_(True)
        rast = render_ids(glctx, device, pos.detach(), tri, (h, w))
        color = mask_colour(rast)
        (grad,) = torch.autograd.grad((dr.antialias(color, rast, pos, tri) * weights).sum(), pos)
        eps = 1e-3  # small enough not to move any pixel centre across an edge

        def loss(t, rast=rast, color=color, direction=direction):
            p = (pos0 + t * direction).to(device)
            return (dr.antialias(color, rast, p, tri) * weights).sum().item()

        fd = (loss(eps) - loss(-eps)) / (2 * eps)
        assert (grad.cpu() * direction).sum().item() == pytest.approx(fd, rel=2e-2, abs=1e-3)


def test_coverage_gradient_agrees_with_exact_box_coverage(glctx, device):
    """The op's d(loss)/d(pos) against central differences of the exactly box-filtered coverage
    (triangle-square intersection areas) under a smooth weighting: the same direction (cosine > 0.99),
    magnitude within 10 %, and the same sign on every component above 10 % of the largest."""
    h, w = 32, 32
    pts = [(5.3, 4.1), (27.2, 9.6), (11.7, 27.4)]
    wclip = [0.8, 1.3, 1.0]
    tri = tri_tensor([[0, 1, 2]]).to(device)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    weights = 1 + 0.5 * torch.sin(0.3 * xx + 1.0) * torch.cos(0.25 * yy + 0.4)

    pos = triangle_pos(pts, wclip, h, w)[None].to(device).requires_grad_(True)
    rast = render_ids(glctx, device, pos.detach(), tri, (h, w))
    aa = dr.antialias(mask_colour(rast), rast, pos, tri)
    (grad,) = torch.autograd.grad((aa[0, ..., 0] * weights.to(device)).sum(), pos)
    grad = grad[0].cpu().double()

    exact = triangle_pos(pts, wclip, h, w, torch.float64)
    coverage = ref.box_coverage(projected(exact, h, w), h, w)
    aa_error = (aa[0, ..., 0].cpu().double() - coverage).abs().mean()
    aliased_error = (mask_colour(rast)[0, ..., 0].cpu() - coverage).abs().mean()
    assert aa_error < 0.3 * aliased_error

    def loss(p):
        return (ref.box_coverage(projected(p, h, w), h, w) * weights).sum().item()

    fd = torch.zeros(3, 4, dtype=torch.float64)
    eps = 1e-5
    for v in range(3):
        for c in (0, 1, 3):
            plus, minus = exact.clone(), exact.clone()
            plus[v, c] += eps
            minus[v, c] -= eps
            fd[v, c] = (loss(plus) - loss(minus)) / (2 * eps)
    assert torch.all(grad[:, 2] == 0)
    cosine = (grad * fd).sum() / (grad.norm() * fd.norm())
    assert cosine > 0.99
    assert grad.norm() == pytest.approx(fd.norm().item(), rel=0.1)
    big = fd.abs() > 0.1 * fd.abs().max()
    assert torch.equal(torch.sign(grad[big]), torch.sign(fd[big]))


def test_pos_gradient_boost_scales_only_pos_gradients(glctx, device):
    pos, tri = sphere_scene(seed=4)
    rast = render_ids(glctx, device, pos, tri, (16, 16))
    color = torch.rand(2, 16, 16, 3, device=device)
    v = torch.randn(2, 16, 16, 3, device=device)
    grads = []
    for boost in (1.0, 4.0):
        inputs = [color.clone().requires_grad_(True), pos.to(device).requires_grad_(True)]
        out = dr.antialias(inputs[0], rast, inputs[1], tri.to(device), pos_gradient_boost=boost)
        grads.append(torch.autograd.grad((out * v).sum(), inputs))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[1][1], 4 * grads[0][1])
    assert grads[0][1].abs().sum() > 0


def test_optimising_vertices_matches_a_silhouette_through_coverage_alone(glctx, device):
    """Constant colours: the image depends on the vertices only through coverage, so rasterize +
    interpolate alone give zero gradient; with antialias, Adam moves the triangle onto the target."""
    h, w = 24, 24
    tri = tri_tensor([[0, 1, 2]]).to(device)
    target_pts = torch.tensor([[4.0, 5.0], [19.5, 7.0], [9.0, 20.0]])
    start_pts = target_pts + torch.tensor([[2.5, -1.5], [-2.0, 2.5], [1.5, -2.0]])

    def render(pts, aa=True):
        xy = pts / torch.tensor([w, h], device=pts.device) * 2 - 1
        pos = torch.cat([xy, torch.zeros_like(xy[:, :1]), torch.ones_like(xy[:, :1])], -1)[None]
        rast = render_ids(glctx, device, pos, tri, (h, w))
        ones = torch.ones(3, 1, device=pts.device)
        color, _ = dr.interpolate(ones, rast, tri)
        return dr.antialias(color, rast, pos, tri) if aa else color

    target = render(target_pts.to(device)).detach()
    pts = start_pts.clone().to(device).requires_grad_(True)
    (no_aa,) = torch.autograd.grad((render(pts, aa=False) - target).square().sum(), pts)
    assert torch.all(no_aa == 0)

    opt = torch.optim.Adam([pts], lr=0.15)
    for _ in range(150):
        opt.zero_grad()
        (render(pts) - target).square().sum().backward()
        opt.step()
    start_err = (start_pts - target_pts).norm(dim=1).max().item()
    err = (pts.detach().cpu() - target_pts).norm(dim=1).max().item()
    assert start_err > 3 and err < 0.25


def sub_pixel_triangles(count, h, w, seed):
    """`count` random triangles under 0.5 px across, each around the centre of its own pixel and
    at a random depth (one mesh, no shared vertices), in front of a full-screen backdrop (last)."""
    g = torch.Generator().manual_seed(seed)
    pts = []
    for k in range(count):
        cx, cy = (k * 7) % (w - 2) + 1.5, (k * 3) % (h - 2) + 1.5
        corners = torch.rand(3, 2, generator=g) * 0.5 - 0.25 + torch.tensor([cx, cy])
        pts.append(corners)
    rows = []
    for k, corners in enumerate(pts):
        depth = -0.5 + 0.01 * k
        rows.append(screen_triangle(corners.tolist(), h, w, z=depth, wclip=1.0 + 0.2 * (k % 3)))
    rows.append(screen_triangle([(-4.0, -4.0), (3.0 * w, -4.0), (-4.0, 3.0 * h)], h, w, z=0.9))
    pos = torch.cat(rows)[None].contiguous()
    return pos, torch.arange(pos.shape[1], dtype=torch.int32).view(-1, 3)


def test_sub_pixel_triangle_blends_stay_within_the_colour_range(glctx, device):
    """A pixel under a sub-pixel triangle can be blended by all four of its pairs; the blend weights
    are then scaled to add up to 1, so the output stays a convex combination of the input colours."""
    px = [[4.35, 4.35], [4.65, 4.47], [4.47, 4.65]]
    pos = screen_triangle(px, 8, 8)[None]
    tri = tri_tensor([[0, 1, 2]])
    rast = render_ids(glctx, device, pos, tri, (8, 8))
    assert (rast[..., 3] > 0).sum() == 1
    out = dr.antialias(mask_colour(rast), rast, pos.to(device), tri.to(device))
    assert out.min() >= 0 and out.max() <= 1
    # the pixel keeps nothing of its own colour here: its four blends add up to more than 1
    assert out.sum() == 0

    h, w = 12, 16
    pos, tri = sub_pixel_triangles(45, h, w, seed=1)
    rast = render_ids(glctx, device, pos, tri, (h, w))
    g = torch.Generator().manual_seed(2)
    color = torch.rand(1, h, w, 3, generator=g)
    w_out = torch.randn(1, h, w, 3, generator=g)
    inputs = [color.to(device).requires_grad_(True), pos.to(device).requires_grad_(True)]
    out = dr.antialias(inputs[0], rast, inputs[1], tri.to(device))
    grads = torch.autograd.grad((out * w_out.to(device)).sum(), inputs)
    ref_inputs = [color.double().requires_grad_(True), pos.double().requires_grad_(True)]
    out_ref = ref.antialias(ref_inputs[0], rast.cpu(), ref_inputs[1], tri)
    grads_ref = torch.autograd.grad((out_ref * w_out.double()).sum(), ref_inputs)
    # the old rule (each pair's blend added on its own) leaves the colour range at some of these pixels
    lo = torch.nn.functional.max_pool2d(-color.permute(0, 3, 1, 2), 3, 1, 1).neg().permute(0, 2, 3, 1)
    hi = torch.nn.functional.max_pool2d(color.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    out = out.detach().cpu()
    assert (out >= lo).all() and (out <= hi).all()
    torch.testing.assert_close(out.double(), out_ref.detach(), atol=2e-5, rtol=0)
    torch.testing.assert_close(grads[0].cpu().double(), grads_ref[0], atol=2e-5, rtol=0)
    scale = grads_ref[1].abs().max().item()
    torch.testing.assert_close(grads[1].cpu().double(), grads_ref[1], atol=1e-4 * scale, rtol=1e-3)


def test_scaled_blend_gradient_matches_finite_differences(glctx, device):
    """Where a pixel's blend weights are scaled down (they add up past 1), d out / d pos follows the
    scaled formula: against central differences of the op."""
    h, w = 8, 8
    pos0 = screen_triangle([[4.3, 4.32], [4.72, 4.45], [4.45, 4.7]], h, w, wclip=[1.0, 1.2, 0.9])[None]
    tri = tri_tensor([[0, 1, 2]]).to(device)
    rast = render_ids(glctx, device, pos0, tri, (h, w))
    color = torch.rand(1, h, w, 2, generator=torch.Generator().manual_seed(0)).to(device)
    weights = torch.randn(1, h, w, 2, generator=torch.Generator().manual_seed(1)).to(device)
    pos = pos0.to(device).requires_grad_(True)
    (grad,) = torch.autograd.grad((dr.antialias(color, rast, pos, tri) * weights).sum(), pos)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        direction = torch.randn(1, 3, 4, generator=g) * torch.tensor([1.0, 1.0, 0.0, 0.3]) * 0.01

        def loss(t, direction=direction):
            p = (pos0 + t * direction).to(device)
            return (dr.antialias(color, rast, p, tri) * weights).double().sum().item()

        eps = 2e-3
        fd = (loss(eps) - loss(-eps)) / (2 * eps)
        assert (grad.cpu() * direction).sum().item() == pytest.approx(fd, rel=2e-2, abs=2e-3)


def test_extreme_colours_give_finite_outputs_and_gradients(glctx, device):
    """Colours at the float limit: blends are weighted sums (no overflowing differences), and position
    gradients whose true value lies beyond float's range saturate at the largest float."""
    big = torch.finfo(torch.float32).max
    pos, tri = sphere_scene(seed=3)
    rast = render_ids(glctx, device, pos, tri, (16, 16))
    g = torch.Generator().manual_seed(0)
    color = torch.where(torch.rand(2, 16, 16, 2, generator=g) < 0.5, -big, big).to(device)
    p = pos.to(device).requires_grad_(True)
    out = dr.antialias(color, rast, p, tri.to(device))
    out.sum().backward()
    assert torch.isfinite(out).all() and out.abs().max() <= big
    assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 1e30


def test_non_finite_positions_do_not_crash(glctx, device):
    pos, tri = sphere_scene(seed=6)
    rast = render_ids(glctx, device, pos, tri, (16, 16))
    bad = pos.clone()
    bad[0, :40] = math.nan
    bad[1, :40] = math.inf
    color = torch.rand(2, 16, 16, 3, device=device)
    p = bad.to(device).requires_grad_(True)
    out = dr.antialias(color, rast, p, tri.to(device))
    out.sum().backward()
    assert torch.isfinite(out).all()


def test_forged_rast_does_not_crash(device):
    """rast is data, not trusted: ids beyond tri, huge or NaN values must not crash anything."""
    pos, tri = sphere_scene(seed=7)
    g = torch.Generator().manual_seed(0)
    rast = torch.rand(2, 12, 12, 4, generator=g) * 2 - 0.5
    ids = torch.randint(0, 2 * tri.shape[0], (2, 12, 12), generator=g).float()
    rast[..., 3] = torch.where(
        torch.rand(2, 12, 12, generator=g) < 0.1,
        torch.tensor([1e30, math.nan, -3.0])[torch.randint(0, 3, (2, 12, 12), generator=g)],
        ids,
    )
    color = torch.rand(2, 12, 12, 3, generator=g)
    p = pos.to(device).requires_grad_(True)
    out = dr.antialias(color.to(device), rast.to(device), p, tri.to(device))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(p.grad).all()


# ---------------------------------------------------------------------------
# Validation


def test_validation_errors(device):
    f32 = {"dtype": torch.float32, "device": device}
    color = torch.zeros(2, 8, 8, 3, **f32)
    rast = torch.zeros(2, 8, 8, 4, **f32)
    pos = torch.zeros(2, 5, 4, **f32)
    tri = torch.tensor([[0, 1, 2], [2, 3, 4]], dtype=torch.int32, device=device)
    aa = dr.antialias
    with pytest.raises(ValueError, match="color must have shape"):
        aa(color[0], rast, pos, tri)
    with pytest.raises(TypeError, match="color must have dtype"):
        aa(color.double(), rast, pos, tri)
    with pytest.raises(TypeError, match="rast must be a torch.Tensor"):
        aa(color, None, pos, tri)
    with pytest.raises(ValueError, match=r"rast must have shape \[N, H, W, 4\]"):
        aa(color, rast[..., :3], pos, tri)
    with pytest.raises(ValueError, match="color and rast must agree"):
        aa(color, rast[:, :7], pos, tri)
    with pytest.raises(ValueError, match="pos must have shape"):
        aa(color, rast, pos[..., :3], tri)
    with pytest.raises(ValueError, match="one position set per image"):
        aa(color, rast, pos[:1], tri)
    with pytest.raises(TypeError, match="tri must have dtype torch.int32"):
        aa(color, rast, pos, tri.long())
    with pytest.raises(ValueError, match=r"tri must have shape \[T, 3\]"):
        aa(color, rast, pos, tri[:, :2])
    with pytest.raises(ValueError, match=r"vertex index 5, outside \[0, 5\)"):
        aa(color, rast, pos, tri + 1)
    with pytest.raises(ValueError, match=r"vertex index -1"):
        aa(color, rast, pos, tri - 1)
    with pytest.raises(TypeError, match="pos_gradient_boost must be a number"):
        aa(color, rast, pos, tri, pos_gradient_boost="big")
    with pytest.raises(ValueError, match="pos_gradient_boost must be finite"):
        aa(color, rast, pos, tri, pos_gradient_boost=math.inf)
    with pytest.raises(TypeError, match="topology_hash must come from antialias_construct_topology_hash"):
        aa(color, rast, pos, tri, topology_hash=tri)
    with pytest.raises(TypeError, match="tri must have dtype torch.int32"):
        dr.antialias_construct_topology_hash(tri.float())
    with pytest.raises(ValueError, match="tri holds vertex index -1"):
        dr.antialias_construct_topology_hash(tri - 1)
    with pytest.raises(ValueError, match="antialias_construct_topology_hash: tri must be on a CPU or CUDA device"):
        dr.antialias_construct_topology_hash(tri.to("meta"))
    with pytest.raises(ValueError, match=r"antialias: tri holds vertex index 5, outside \[0, 5\) \(pos has 5 vert"):
        aa(color, rast, pos, tri + 1)
    if device.type == "cpu" and torch.cuda.is_available():
        with pytest.raises(ValueError, match="all tensors must be on one device"):
            aa(color, rast.cuda(), pos, tri)
        with pytest.raises(ValueError, match="all tensors must be on one device"):
            aa(color, rast, pos, tri, topology_hash=dr.antialias_construct_topology_hash(tri.cuda()))
    # range mode takes any number of images; non-contiguous inputs are accepted
    out = aa(color.transpose(1, 2), rast, pos[0], tri)
    assert out.shape == color.shape and torch.equal(out, color)
