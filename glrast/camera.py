"""Camera helpers: clip-space matrices for rasterize, and OpenCV pinhole cameras.

All matrices are 4x4 and act on column vectors: ``clip = M @ [X, Y, Z, 1]``.
Functions take Python numbers or tensors; tensors keep their dtype and device
(Python numbers give float32 on the CPU) and gradients flow through every
function. Leading batch dimensions broadcast where a docstring says ``[..., ]``.

Two camera conventions meet here:

* **OpenGL** (``perspective``, ``orthographic``, ``look_at``): the camera looks
  down its -z axis, +y is up, and clip-space y = +1 is the top of the view.
  glrast's row 0 is clip y = -1, so the rendered image has the view's *bottom*
  row first: flip rows to save or show it upright.
* **OpenCV** (``from_opencv``, ``to_opencv``): the camera looks down +z, +y is
  down, and ``[u, v, 1] ~ K @ (R @ X + t)`` gives pixel coordinates with the
  centre of the top-left pixel at (0, 0) (pixel centres at integers).
  glrast's pixel centres are at half-integers, so ``px = u + 0.5`` and, by
  default, ``py = v + 0.5``: **rast row i is OpenCV image row i** and the image
  needs no flip (row 0 is the top of the picture). With ``flip_y=True`` rast row
  i is OpenCV row H - 1 - i instead, like an OpenGL camera (flip to save).
  Lens distortion is not modelled; undistort images first.
"""

from __future__ import annotations

import math

import torch

Number = float | int
TensorLike = torch.Tensor | Number


def _tensor(x: object, like: torch.Tensor | None = None) -> torch.Tensor:
    """`x` as a floating tensor: tensors keep dtype/device, others follow `like` or become float32."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float32)
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.float32)


def _reference(*xs: object) -> torch.Tensor | None:
    """The first floating tensor among `xs`: it decides dtype and device of the result."""
    for x in xs:
        if isinstance(x, torch.Tensor):
            return _tensor(x)
    return None


def _matrix(rows: list[list[object]], like: torch.Tensor | None) -> torch.Tensor:
    """Stack a 4x4 nested list of scalars/tensors (all broadcast to one batch shape) into [..., 4, 4]."""
    cells = [_tensor(c, like) for row in rows for c in row]
    cells = torch.broadcast_tensors(*cells)
    return torch.stack(cells, dim=-1).reshape(*cells[0].shape, 4, 4)


def _require(ok: torch.Tensor, message: str, **got: torch.Tensor) -> None:
    """Raise ValueError(message + the values in `got`) unless every element of the boolean tensor `ok` is true."""
    if not bool(ok.all()):
        values = ", ".join(f"{name}={value.tolist()}" for name, value in got.items())
        raise ValueError(f"{message}, got {values}" if got else message)


def perspective(fovy: TensorLike, aspect: TensorLike, near: TensorLike, far: TensorLike) -> torch.Tensor:
    """OpenGL perspective projection, [4, 4] (or [..., 4, 4] for batched tensor arguments).

    fovy: vertical field of view in degrees, in (0, 180); aspect: width / height of the
    image, > 0; near, far: distances of the clipping planes, 0 < near < far, mapped to
    z/w = -1 and +1.
    """
    ref = _reference(fovy, aspect, near, far)
    fovy, aspect, near, far = (_tensor(x, ref) for x in (fovy, aspect, near, far))
    _require((fovy > 0) & (fovy < 180), "perspective: fovy must be in (0, 180) degrees", fovy=fovy)
    _require(aspect > 0, "perspective: aspect must be > 0", aspect=aspect)
    _require((near > 0) & (far > near), "perspective: needs 0 < near < far", near=near, far=far)
    f = 1.0 / torch.tan(torch.deg2rad(fovy) / 2)
    zero, one = torch.zeros_like(f), torch.ones_like(f)
    return _matrix(
        [
            [f / aspect, zero, zero, zero],
            [zero, f, zero, zero],
            [zero, zero, (far + near) / (near - far), 2 * far * near / (near - far)],
            [zero, zero, -one, zero],
        ],
        f,
    )


def orthographic(
    left: TensorLike, right: TensorLike, bottom: TensorLike, top: TensorLike, near: TensorLike, far: TensorLike
) -> torch.Tensor:
    """OpenGL orthographic projection of the box [left, right] x [bottom, top] x [-far, -near]
    (camera coordinates, looking down -z) onto clip space; [4, 4] (or batched)."""
    ref = _reference(left, right, bottom, top, near, far)
    l, r, b, t, n, f = (_tensor(x, ref) for x in (left, right, bottom, top, near, far))
    for names, lo, hi in (("left right", l, r), ("bottom top", b, t), ("near far", n, f)):
        first, second = names.split()
        _require(lo != hi, f"orthographic: {first} and {second} must differ", **{first: lo, second: hi})
    zero, one = torch.zeros_like(l), torch.ones_like(l)
    return _matrix(
        [
            [2 / (r - l), zero, zero, -(r + l) / (r - l)],
            [zero, 2 / (t - b), zero, -(t + b) / (t - b)],
            [zero, zero, -2 / (f - n), -(f + n) / (f - n)],
            [zero, zero, zero, one],
        ],
        l,
    )


def look_at(eye: object, target: object, up: object = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """World-to-camera (view) matrix of an OpenGL camera at `eye` looking at `target`.

    eye, target, up: [..., 3]. The camera's -z axis points at the target and its
    +y axis lies in the plane of `up` and the viewing direction. Returns [..., 4, 4].
    """
    ref = _reference(eye, target, up)
    eye, target, up = (_tensor(x, ref) for x in (eye, target, up))
    for name, x in (("eye", eye), ("target", target), ("up", up)):
        if x.shape[-1:] != (3,):
            raise ValueError(f"look_at: {name} must have shape [..., 3], got {list(x.shape)}")
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    back = eye - target  # camera +z
    _require(back.norm(dim=-1) > 0, "look_at: eye and target must differ")
    back = torch.nn.functional.normalize(back, dim=-1)
    side = torch.linalg.cross(up, back)
    _require(side.norm(dim=-1) > 1e-6 * up.norm(dim=-1), "look_at: up must not be parallel to target - eye (nor zero)")
    right = torch.nn.functional.normalize(side, dim=-1)
    true_up = torch.linalg.cross(back, right)
    rot = torch.stack([right, true_up, back], dim=-2)  # rows: camera axes in world coordinates
    trans = -(rot @ eye.unsqueeze(-1))
    top = torch.cat([rot, trans], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def transform(mtx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 matrices to 3D points: clip-space positions ready for rasterize.

    mtx: [4, 4] or [N, 4, 4]; pos: [V, 3] (or [V, 4] homogeneous) or [N, V, 3].
    Returns [N, V, 4] (N = 1 for a single matrix and a single point set).
    """
    if pos.shape[-1] == 3:
        pos = torch.cat([pos, torch.ones_like(pos[..., :1])], dim=-1)
    if mtx.ndim == 2:
        mtx = mtx[None]
    if pos.ndim == 2:
        pos = pos[None]
    return pos @ mtx.transpose(-1, -2)


def _extrinsic(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[R | t] padded to [..., 4, 4]."""
    top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def from_opencv(
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    flip_y: bool = False,
) -> torch.Tensor:
    """Clip-from-world matrix of an OpenCV pinhole camera.

    K: [..., 3, 3] intrinsics (fx, skew, cx; 0, fy, cy; 0, 0, 1) in pixels with
    pixel centres at integers; R: [..., 3, 3] world-to-camera rotation; t: [..., 3]
    translation (camera = R @ world + t, +z in front of the camera); width, height:
    image size in pixels, used as rasterize's resolution (height, width);
    near, far: camera-space depths mapped to z/w = -1 and +1.
    Returns [..., 4, 4] such that rasterizing ``transform(M, X)`` at (height, width)
    puts the point with OpenCV pixel (u, v) at pixel coordinates (u + 0.5, v + 0.5):
    rast row i is OpenCV row i (flip_y=False) or OpenCV row H - 1 - i (flip_y=True).
    w_clip equals the camera-space depth z.
    """
    K = _tensor(K)
    R, t = _tensor(R, K).to(K.dtype), _tensor(t, K).to(K.dtype)
    for name, x, shape in (("K", K, (3, 3)), ("R", R, (3, 3)), ("t", t, (3,))):
        if x.shape[-len(shape) :] != shape:
            want = ", ".join(map(str, shape))
            raise ValueError(f"from_opencv: {name} must have shape [..., {want}], got {list(x.shape)}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"from_opencv: width and height must be >= 1, got {width}, {height}")
    if not 0 < float(near) < float(far):
        raise ValueError(f"from_opencv: needs 0 < near < far, got near={near}, far={far}")
    W, H = float(width), float(height)
    n, f = float(near), float(far)
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    sign = -1.0 if flip_y else 1.0
    # x/w = 2 (u + 0.5) / W - 1 with u = (fx X + s Y) / Z + cx; likewise for y; w = Z
    proj = _matrix(
        [
            [2 * fx / W, 2 * s / W, 2 * (cx + 0.5) / W - 1, zero],
            [zero, sign * 2 * fy / H, sign * (2 * (cy + 0.5) / H - 1), zero],
            [zero, zero, (f + n) / (f - n) * one, -2 * f * n / (f - n) * one],
            [zero, zero, one, zero],
        ],
        fx,
    )
    return proj @ _extrinsic(R, t)


def to_opencv(
    mtx: torch.Tensor, width: int, height: int, flip_y: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The OpenCV camera of a perspective clip-from-world matrix: inverse of `from_opencv`.

    mtx: [..., 4, 4] (any positive scale); width, height: the image size it is rendered at;
    flip_y as in `from_opencv`. Returns (K [..., 3, 3], R [..., 3, 3], t [..., 3], near [...], far [...]),
    with fx, fy > 0 and det(R) = +1. A matrix from ``perspective(...) @ look_at(...)``
    converts with flip_y=True (OpenGL cameras have y up).
    """
    mtx = _tensor(mtx)
    if mtx.shape[-2:] != (4, 4):
        raise ValueError(f"to_opencv: mtx must have shape [..., 4, 4], got {list(mtx.shape)}")
    scale = torch.linalg.norm(mtx[..., 3, :3], dim=-1)
    if bool((scale <= 1e-12).any()):
        raise ValueError("to_opencv: mtx is not a perspective projection (its w row has no xyz part: orthographic?)")
    m = mtx / scale[..., None, None]
    if flip_y:
        m = m * torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=m.dtype, device=m.device)[:, None]
    W, H = float(width), float(height)
    r3, t3 = m[..., 3, :3], m[..., 3, 3]
    # row 1 = (2 fy / H) r2 + cy' r3: split along the orthonormal rows of R
    cy_n = (m[..., 1, :3] * r3).sum(-1)
    fy_r2 = m[..., 1, :3] - cy_n[..., None] * r3
    fy_n = torch.linalg.norm(fy_r2, dim=-1)
    r2 = fy_r2 / fy_n[..., None]
    cx_n = (m[..., 0, :3] * r3).sum(-1)
    s_n = (m[..., 0, :3] * r2).sum(-1)
    fx_r1 = m[..., 0, :3] - cx_n[..., None] * r3 - s_n[..., None] * r2
    fx_n = torch.linalg.norm(fx_r1, dim=-1)
    r1 = fx_r1 / fx_n[..., None]
    R = torch.stack([r1, r2, r3], dim=-2)
    if bool((torch.linalg.det(R) < 0).any()):
        hint = "flip_y=False" if flip_y else "flip_y=True (e.g. an OpenGL camera)"
        raise ValueError(f"to_opencv: mtx maps image rows the other way round; pass {hint}")
    fx, fy, s = fx_n * W / 2, fy_n * H / 2, s_n * W / 2
    cx = (cx_n + 1) * W / 2 - 0.5
    cy = (cy_n + 1) * H / 2 - 0.5
    # translation: rows 0, 1 hold (2 fx / W) t1 + (2 s / W) t2 + cx' t3 and (2 fy / H) t2 + cy' t3
    t2 = (m[..., 1, 3] - cy_n * t3) / fy_n
    t1 = (m[..., 0, 3] - s_n * t2 - cx_n * t3) / fx_n
    t = torch.stack([t1, t2, t3], dim=-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    K = torch.stack([fx, s, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(*fx.shape, 3, 3)
    # z/w = a + b / z with a = (f + n) / (f - n), b = -2 f n / (f - n)
    a = (m[..., 2, :3] * r3).sum(-1)
    b = m[..., 2, 3] - a * t3
    near = -b / (1 + a)
    far = b / (1 - a)
    return K, R, t, near, far


def intrinsics_from_fov(fovy: float, width: int, height: int) -> torch.Tensor:
    """K [3, 3] float32 of a centred pinhole camera with square pixels and vertical field of view
    `fovy` degrees: the OpenCV twin of ``perspective(fovy, width / height, ...)``."""
    fy = height / 2 / math.tan(math.radians(fovy) / 2)
    return torch.tensor([[fy, 0, (width - 1) / 2], [0, fy, (height - 1) / 2], [0, 0, 1]], dtype=torch.float32)
