"""Camera helpers: matrices against closed forms, OpenCV round trips, and where
rasterize puts points projected by an OpenCV camera."""

import math

import pytest
import torch

import glrast as dr
from glrast import camera


def rotation(axis, angle_deg, dtype=torch.float32):
    """Rodrigues' formula, written out for the test."""
    a = torch.tensor(axis, dtype=torch.float64)
    a = a / a.norm()
    x = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=torch.float64)
    th = math.radians(angle_deg)
    return (torch.eye(3, dtype=torch.float64) + math.sin(th) * x + (1 - math.cos(th)) * x @ x).to(dtype)


K_TEST = torch.tensor([[30.0, 0.7, 15.7], [0.0, 28.0, 11.3], [0.0, 0.0, 1.0]])
R_TEST = rotation([0.3, -1.0, 0.2], 25.0)
T_TEST = torch.tensor([0.1, -0.2, 4.0])


def opencv_project(K, R, t, X):
    """[P, 3] world points -> ([P, 2] OpenCV pixel coordinates, [P] depth)."""
    cam = X @ R.T + t
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:], cam[:, 2]


def test_perspective_closed_form():
    f = 1 / math.tan(math.radians(45) / 2)
    n, fa = 0.1, 10.0
    expected = torch.tensor(
        [[f / 1.5, 0, 0, 0], [0, f, 0, 0], [0, 0, (fa + n) / (n - fa), 2 * fa * n / (n - fa)], [0, 0, -1, 0]]
    )
    m = camera.perspective(45.0, 1.5, n, fa)
    assert m.dtype == torch.float32 and m.shape == (4, 4)
    torch.testing.assert_close(m, expected)
    # depths -near and -far land on z/w = -1 and +1
    clip = camera.transform(m, torch.tensor([[0.0, 0.0, -n], [0.0, 0.0, -fa]]))[0]
    torch.testing.assert_close(clip[:, 2] / clip[:, 3], torch.tensor([-1.0, 1.0]))


def test_perspective_batched():
    fov = torch.tensor([30.0, 60.0, 90.0])
    m = camera.perspective(fov, 1.0, 1.0, 5.0)
    assert m.shape == (3, 4, 4)
    torch.testing.assert_close(m[2, 1, 1], torch.tensor(1.0))


def test_orthographic_maps_box_to_cube():
    m = camera.orthographic(-2.0, 4.0, -1.0, 3.0, 0.5, 8.0)
    corners = torch.tensor([[-2.0, -1.0, -0.5], [4.0, 3.0, -8.0]])
    clip = camera.transform(m, corners)[0]
    torch.testing.assert_close(clip, torch.tensor([[-1.0, -1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))


def test_look_at():
    # the peers' benchmark camera: eye (0, 0, 3) looking at the origin is a pure translation
    v = camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    expected = torch.eye(4)
    expected[2, 3] = -3
    torch.testing.assert_close(v, expected)
    eye, target = torch.tensor([1.0, 2.0, -3.0]), torch.tensor([0.5, -1.0, 2.0])
    v = camera.look_at(eye, target, torch.tensor([0.0, 0.0, 1.0]))
    rot = v[:3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.tensor(1.0))
    cam = camera.transform(v, torch.stack([eye, target]))[0]
    dist = (target - eye).norm()
    torch.testing.assert_close(cam[:, :3], torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -float(dist)]]), atol=1e-5, rtol=0)
    # up (0, 0, 1) stays up: a point above the target has camera y > 0
    assert camera.transform(v, (target + torch.tensor([0.0, 0.0, 1.0]))[None])[0, 0, 1] > 0


def test_transform_shapes():
    pos = torch.randn(5, 3)
    assert camera.transform(torch.eye(4), pos).shape == (1, 5, 4)
    assert camera.transform(torch.eye(4)[None].repeat(3, 1, 1), pos).shape == (3, 5, 4)
    torch.testing.assert_close(camera.transform(torch.eye(4), pos)[0, :, :3], pos)


@pytest.mark.parametrize("flip_y", [False, True])
def test_from_opencv_projects_like_opencv(flip_y):
    W, H = 32, 24
    X = torch.randn(50, 3) + torch.tensor([0.0, 0.0, 1.0])
    uv, depth = opencv_project(K_TEST, R_TEST, T_TEST, X)
    m = camera.from_opencv(K_TEST, R_TEST, T_TEST, W, H, 0.5, 20.0, flip_y=flip_y)
    clip = camera.transform(m, X)[0]
    px = (clip[:, 0] / clip[:, 3] + 1) / 2 * W
    py = (clip[:, 1] / clip[:, 3] + 1) / 2 * H
    torch.testing.assert_close(px, uv[:, 0] + 0.5, atol=1e-4, rtol=0)
    torch.testing.assert_close(py, (H - uv[:, 1] - 0.5) if flip_y else (uv[:, 1] + 0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(clip[:, 3], depth, atol=1e-5, rtol=0)
    # camera-space depths near and far land on z/w = -1 and +1
    near_far = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 20.0]]) - T_TEST
    clip = camera.transform(m, near_far @ R_TEST)[0]
    torch.testing.assert_close(clip[:, 2] / clip[:, 3], torch.tensor([-1.0, 1.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("flip_y", [False, True])
def test_opencv_round_trip(flip_y):
    gen = torch.Generator().manual_seed(1)
    Ks, Rs, ts = [], [], []
    for k in range(4):
        f = 20 + 30 * torch.rand(2, generator=gen, dtype=torch.float64)
        c = 10 + 5 * torch.rand(2, generator=gen, dtype=torch.float64)
        Ks.append(torch.tensor([[f[0], 0.3 * k, c[0]], [0, f[1], c[1]], [0, 0, 1]], dtype=torch.float64))
        Rs.append(rotation(torch.randn(3, generator=gen).tolist(), 40.0 * k - 70, torch.float64))
        ts.append(torch.randn(3, generator=gen, dtype=torch.float64))
    K, R, t = torch.stack(Ks), torch.stack(Rs), torch.stack(ts)
    m = camera.from_opencv(K, R, t, 40, 30, 0.25, 50.0, flip_y=flip_y)
    assert m.shape == (4, 4, 4) and m.dtype == torch.float64
    # any positive scale of the matrix is the same camera
    K2, R2, t2, n2, f2 = camera.to_opencv(m * 3.0, 40, 30, flip_y=flip_y)
    torch.testing.assert_close(K2, K)
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(t2, t)
    torch.testing.assert_close(n2, torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(f2, torch.full((4,), 50.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="flip_y"):
        camera.to_opencv(m, 40, 30, flip_y=not flip_y)


def test_opengl_camera_to_opencv():
    W, H = 64, 48
    m = camera.perspective(50.0, W / H, 0.1, 10.0) @ camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0))
    K, R, t, near, far = camera.to_opencv(m, W, H, flip_y=True)
    torch.testing.assert_close(K, camera.intrinsics_from_fov(50.0, W, H))
    # OpenCV looks down +z with y down: the OpenGL camera turned half a turn about x
    torch.testing.assert_close(R, torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6, rtol=0)
    torch.testing.assert_close(t, torch.tensor([0.0, 0.0, 3.0]))
    torch.testing.assert_close(torch.stack([near, far]), torch.tensor([0.1, 10.0]))


def test_to_opencv_rejects_orthographic():
    with pytest.raises(ValueError, match="perspective"):
        camera.to_opencv(camera.orthographic(-1.0, 1.0, -1.0, 1.0, 0.1, 10.0), 8, 8)
    with pytest.raises(ValueError, match=r"\[\.\.\., 4, 4\]"):
        camera.to_opencv(torch.eye(3), 8, 8)


def test_gradients():
    K = K_TEST.double().requires_grad_()
    R = R_TEST.double().requires_grad_()
    t = T_TEST.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda K, R, t: camera.from_opencv(K, R, t, 32, 24, 0.5, 20.0), (K, R, t))
    eye = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, c: camera.look_at(e, c), (eye, target))
    fov = torch.tensor(40.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: camera.perspective(f, 1.3, 0.1, 5.0), (fov,))
    m = camera.from_opencv(K, R, t, 32, 24, 0.5, 20.0).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda m: camera.to_opencv(m, 32, 24)[:3], (m,))


@pytest.mark.parametrize("flip_y", [False, True])
def test_rasterized_opencv_triangle(glctx, device, flip_y):
    """Pixel (row i, column j) of rast shows the point whose OpenCV pixel is (u=j, v=i)
    (flip_y: v = H - 1 - i), with the perspective-correct barycentrics of that point."""
    W, H = 32, 24
    corners_uv = torch.tensor([[3.2, 2.1], [28.7, 5.4], [12.3, 21.6]])
    depth = torch.tensor([3.0, 4.0, 5.0])
    cam = torch.cat([corners_uv, torch.ones(3, 1)], 1) @ torch.linalg.inv(K_TEST).T * depth[:, None]
    X = (cam - T_TEST) @ R_TEST  # R^T (cam - t), row-wise
    uv, _ = opencv_project(K_TEST, R_TEST, T_TEST, X)
    torch.testing.assert_close(uv, corners_uv, atol=1e-4, rtol=0)

    m = camera.from_opencv(K_TEST, R_TEST, T_TEST, W, H, 0.5, 20.0, flip_y=flip_y)
    pos = camera.transform(m, X).to(device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    rast, _ = dr.rasterize(glctx, pos, tri, (H, W))
    rast = rast[0].cpu()
    if flip_y:
        rast = rast.flip(0)  # now row i is OpenCV row i

    # screen-space barycentrics of every OpenCV pixel centre (u=j, v=i), then perspective-corrected
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    a, b, c = corners_uv
    area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    l0 = ((b[0] - u) * (c[1] - v) - (b[1] - v) * (c[0] - u)) / area
    l1 = ((c[0] - u) * (a[1] - v) - (c[1] - v) * (a[0] - u)) / area
    l2 = 1 - l0 - l1
    lam = torch.stack([l0, l1, l2], -1)
    inside = (lam > 1e-3).all(-1)
    outside = (lam < -1e-3).any(-1)
    assert inside.sum() > 50
    covered = rast[..., 3] > 0
    assert covered[inside].all() and not covered[outside].any()
    persp = lam / depth
    persp = persp / persp.sum(-1, keepdim=True)
    torch.testing.assert_close(rast[..., :2][inside], persp[..., :2][inside], atol=2e-4, rtol=0)


def test_argument_errors():
    """Degenerate cameras raise a ValueError naming the argument instead of returning inf/NaN/zero matrices."""
    bad = [
        (lambda: camera.perspective(0.0, 1.0, 0.1, 10.0), "fovy"),
        (lambda: camera.perspective(torch.tensor([30.0, 180.0]), 1.0, 0.1, 10.0), r"fovy=\[30.0, 180.0\]"),
        (lambda: camera.perspective(45.0, -1.0, 0.1, 10.0), "aspect"),
        (lambda: camera.perspective(45.0, 1.0, 0.0, 10.0), "near"),
        (lambda: camera.perspective(45.0, 1.0, 2.0, 1.0), "near < far"),
        (lambda: camera.orthographic(1.0, 1.0, -1.0, 1.0, 0.1, 10.0), "left and right"),
        (lambda: camera.orthographic(-1.0, 1.0, -1.0, 1.0, 2.0, 2.0), "near and far"),
        (lambda: camera.look_at((1.0, 2.0, 3.0), (1.0, 2.0, 3.0)), "eye and target"),
        (lambda: camera.look_at((0.0, 3.0, 0.0), (0.0, 0.0, 0.0)), "up must not be parallel"),
        (lambda: camera.look_at((0.0, 0.0), (0.0, 0.0)), r"\[\.\.\., 3\]"),
        (lambda: camera.from_opencv(K_TEST[:2], R_TEST, T_TEST, 32, 24, 0.5, 20.0), "K must have shape"),
        (lambda: camera.from_opencv(K_TEST, R_TEST, T_TEST[:, None], 32, 24, 0.5, 20.0), "t must have shape"),
        (lambda: camera.from_opencv(K_TEST, R_TEST, T_TEST, 0, 24, 0.5, 20.0), "width and height"),
        (lambda: camera.from_opencv(K_TEST, R_TEST, T_TEST, 32, 24, 20.0, 0.5), "near < far"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()
    # R and t follow K's dtype
    m = camera.from_opencv(K_TEST.double(), R_TEST, T_TEST, 32, 24, 0.5, 20.0)
    assert m.dtype == torch.float64
