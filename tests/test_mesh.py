"""Mesh helpers: procedural meshes (counts, winding, the benchmark icosphere's exact
construction), vertex normals against hand-computed values, loading files."""

import hashlib
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from glrast import mesh


def outward_count(pos, tri, tol=1e-6):
    """(faces whose normal points away from the origin, faces pointing inwards)."""
    a, b, c = (pos[tri[:, k].long()] for k in range(3))
    d = (torch.linalg.cross(b - a, c - a) * (a + b + c)).sum(-1)
    return int((d > tol).sum()), int((d < -tol).sum())


def assert_closed(tri):
    """Every directed edge appears once and its reverse once: closed, consistently wound."""
    e = tri.long()
    edges = torch.cat([e[:, [0, 1]], e[:, [1, 2]], e[:, [2, 0]]])
    directed = set(map(tuple, edges.tolist()))
    assert len(directed) == len(edges)
    assert all((b, a) in directed for a, b in directed)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_icosphere_counts_and_shape(level):
    pos, tri = mesh.icosphere(level)
    assert pos.dtype == torch.float32 and tri.dtype == torch.int32
    assert pos.shape == (10 * 4**level + 2, 3) and tri.shape == (20 * 4**level, 3)
    torch.testing.assert_close(pos.norm(dim=1), torch.ones(len(pos)))
    assert outward_count(pos, tri) == (len(tri), 0)
    assert_closed(tri)


def test_icosphere_matches_benchmark_job():
    """Level 2 of the shared benchmark's construction, recorded once: same faces, same vertices."""
    pos, tri = mesh.icosphere(2)
    digest = hashlib.sha256(tri.numpy().tobytes()).hexdigest()
    assert digest == "90170b5a7b8e60084e5ed7f3a9926220c8b857185da6412308adb825604993d7"
    assert tri[:3].tolist() == [[0, 46, 43], [0, 43, 42], [0, 42, 44]]
    assert tri[100].tolist() == [34, 115, 100] and tri[-1].tolist() == [123, 121, 125]
    expected = {
        0: [-0.525731086730957, 0.8506507873535156, 0.0],
        12: [0.0, 1.0, 0.0],
        50: [0.6937804818153381, 0.7020464539527893, -0.1606220304965973],
        161: [-0.525731086730957, 0.0, -0.8506507873535156],
    }
    for i, v in expected.items():
        torch.testing.assert_close(pos[i], torch.tensor(v), atol=1e-7, rtol=0)
    weighted = (pos.double() * torch.arange(len(pos), dtype=torch.float64)[:, None]).sum(0)
    expected_sum = torch.tensor([69.96972852945328, -457.57013696432114, -123.6060282588005], dtype=torch.float64)
    torch.testing.assert_close(weighted, expected_sum, atol=1e-4, rtol=0)


def test_icosphere_rejects_bad_level():
    for bad in (-1, 11, 2.0, True):
        with pytest.raises(ValueError, match="level"):
            mesh.icosphere(bad)


def test_cube():
    pos, tri = mesh.cube()
    assert pos.shape == (8, 3) and tri.shape == (12, 3)
    assert sorted(map(tuple, pos.tolist())) == [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    assert outward_count(pos, tri) == (12, 0)
    assert_closed(tri)
    # each face normal is an axis direction, two triangles per axis direction
    a, b, c = (pos[tri[:, k].long()] for k in range(3))
    n = torch.nn.functional.normalize(torch.linalg.cross(b - a, c - a), dim=1)
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).repeat(2, 1)
    assert sorted(map(tuple, n.tolist())) == sorted(map(tuple, axes.tolist()))


def test_uv_sphere():
    rows, cols = 6, 10
    pos, tri, uv = mesh.uv_sphere(rows, cols)
    assert pos.shape == ((rows + 1) * (cols + 1), 3) and uv.shape == (len(pos), 2) and tri.shape == (2 * rows * cols, 3)
    torch.testing.assert_close(pos.norm(dim=1), torch.ones(len(pos)))
    # t follows the height (south pole t = 0), s the longitude
    torch.testing.assert_close(pos[:, 1], -torch.cos(torch.pi * uv[:, 1]), atol=1e-6, rtol=0)
    lon = torch.atan2(pos[:, 0], pos[:, 2]) % (2 * torch.pi)
    inner = (uv[:, 1] > 0) & (uv[:, 1] < 1) & (uv[:, 0] < 1)
    torch.testing.assert_close(lon[inner], 2 * torch.pi * uv[inner, 0], atol=1e-5, rtol=0)
    # all faces point outwards except the degenerate ones at the poles
    assert outward_count(pos, tri) == (2 * rows * cols - 2 * cols, 0)
    with pytest.raises(ValueError, match="rows"):
        mesh.uv_sphere(1, 8)


def test_vertex_normals_hand_computed():
    # a roof of two triangles on the edge 0-2: A in the plane z = 0 (area 2, normal +z),
    # B in the plane x = 0 (area 1, normal +x); vertex 4 belongs to no triangle
    pos = torch.tensor([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [5, 5, 5]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    n = mesh.vertex_normals(pos, tri)
    shared = torch.tensor([1.0, 0.0, 2.0]) / 5**0.5  # normalize(2 * (2 * +z) + 2 * (1 * +x))
    expected = torch.stack([shared, torch.tensor([0.0, 0, 1]), shared, torch.tensor([1.0, 0, 0]), torch.zeros(3)])
    torch.testing.assert_close(n, expected)
    # batched positions: one result per position set
    nb = mesh.vertex_normals(torch.stack([pos, 2 * pos]), tri)
    torch.testing.assert_close(nb, torch.stack([expected, expected]))


def test_vertex_normals_of_sphere_are_radial():
    pos, tri = mesh.icosphere(3)
    n = mesh.vertex_normals(pos, tri)
    assert (n * pos).sum(1).min() > 0.999


def test_vertex_normals_gradient():
    pos, tri = mesh.icosphere(0)
    pos = (pos.double() + 0.1 * torch.randn(pos.shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: mesh.vertex_normals(p, tri), (pos,))


def test_vertex_normals_validation():
    with pytest.raises(ValueError, match=r"pos must have shape \[V, 3\]"):
        mesh.vertex_normals(torch.zeros(4, 4), torch.zeros(1, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"tri must be an integer tensor of shape \[T, 3\]"):
        mesh.vertex_normals(torch.zeros(4, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"tri holds vertex index 4, outside \[0, 4\)"):
        mesh.vertex_normals(torch.zeros(4, 3), torch.tensor([[0, 1, 4]], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"tri holds vertex index -1, outside \[0, 4\)"):
        mesh.vertex_normals(torch.zeros(4, 3), torch.tensor([[0, -1, 2]], dtype=torch.int32))


OBJ = """mtllib square.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
usemtl paint
f 1/1 2/2 3/3
f 1/5 3/3 4/4
"""


def test_load_obj_with_texture(tmp_path):
    (tmp_path / "square.obj").write_text(OBJ)
    (tmp_path / "square.mtl").write_text("newmtl paint\nmap_Kd paint.png\n")
    image = np.zeros((2, 3, 3), np.uint8)
    image[0] = 255  # top row white
    Image.fromarray(image).save(tmp_path / "paint.png")
    m = mesh.load(tmp_path / "square.obj")
    # vertex 1 carries two texture coordinates and becomes two vertices
    assert m.pos.shape == (5, 3) and m.tri.shape == (2, 3) and m.tri.dtype == torch.int32
    corners = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0]], [[0.0, 0, 0], [1, 1, 0], [0, 1, 0]]])
    torch.testing.assert_close(m.pos[m.tri.long()], corners)
    corner_uv = torch.tensor([[[0.0, 0], [1, 0], [1, 1]], [[0.5, 0.5], [1, 1], [0, 1]]])
    torch.testing.assert_close(m.uv[m.tri.long()], corner_uv)
    # normals are smooth across the split vertex
    torch.testing.assert_close(m.normals, torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3))
    # the image's bottom row comes first (t = 0)
    assert m.texture.shape == (2, 3, 3)
    torch.testing.assert_close(m.texture[:, :, 0], torch.tensor([[0.0, 0, 0], [1, 1, 1]]))
    assert m.colors is None


def test_load_obj_with_uvs_but_no_texture(tmp_path):
    # no mtllib: trimesh makes up a grey placeholder image, which is not the mesh's texture
    (tmp_path / "square.obj").write_text(OBJ.replace("mtllib square.mtl\n", "").replace("usemtl paint\n", ""))
    m = mesh.load(tmp_path / "square.obj")
    assert m.uv is not None and m.uv.shape == (5, 2)
    assert m.texture is None and m.colors is None


def test_load_ply_with_colors(tmp_path):
    ply = "\n".join([
        "ply", "format ascii 1.0", "element vertex 4",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue",
        "element face 4", "property list uchar int vertex_indices", "end_header",
        "0 0 0 255 0 0", "1 0 0 0 255 0", "0 1 0 0 0 255", "0 0 1 255 255 255",
        "3 0 2 1", "3 0 1 3", "3 1 2 3", "3 0 3 2", "",
    ])  # fmt: skip
    (tmp_path / "tet.ply").write_text(ply)
    m = mesh.load(tmp_path / "tet.ply")
    torch.testing.assert_close(m.pos, torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert m.tri.tolist() == [[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]]
    torch.testing.assert_close(m.colors, torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))
    assert m.uv is None and m.texture is None
    # vertex 0: three right triangles of area 1/2 with normals -x, -y, -z
    torch.testing.assert_close(m.normals[0], -torch.ones(3) / 3**0.5)
    # vertex 3: faces with normals -y (area 1/2), (1, 1, 1)/sqrt(3) (area sqrt(3)/2), -x (area 1/2)
    torch.testing.assert_close(m.normals[3], torch.tensor([0.0, 0.0, 1.0]))


def test_load_glb_scene(tmp_path):
    import trimesh

    pos, tri = mesh.icosphere(1)
    part = trimesh.Trimesh(pos.numpy(), tri.numpy(), process=False)
    scene = trimesh.Scene()
    scene.add_geometry(part, transform=trimesh.transformations.translation_matrix([2.0, 0.0, 0.0]))
    scene.export(tmp_path / "ball.glb")
    m = mesh.load(tmp_path / "ball.glb", device="cpu")
    assert m.tri.shape == tri.shape and m.pos.shape == pos.shape
    torch.testing.assert_close(m.pos, pos + torch.tensor([2.0, 0.0, 0.0]))
    assert m.tri.tolist() == tri.tolist()


@pytest.mark.parametrize("suffix", ["obj", "glb"])
def test_load_textured_sphere(tmp_path, suffix):
    """OBJ (map_Kd) and glTF (PBR baseColorTexture, whose uv origin is the image's top) load alike:
    t = 1 at the image's top row, and the texture tensor has that row last."""
    import trimesh

    pos, tri, uv = mesh.uv_sphere(6, 8)
    image = np.zeros((8, 16, 3), np.uint8)
    image[:4, :, 0] = 255  # top half red (north, t > 1/2), bottom half blue
    image[4:, :, 2] = 255
    visual = trimesh.visual.TextureVisuals(uv=uv.numpy(), image=Image.fromarray(image))
    trimesh.Trimesh(pos.numpy(), tri.numpy(), visual=visual, process=False).export(tmp_path / f"ball.{suffix}")
    m = mesh.load(tmp_path / f"ball.{suffix}")
    assert m.texture.shape == (8, 16, 3) and m.uv.shape == (len(m.pos), 2)
    torch.testing.assert_close(m.texture[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(m.texture[-1, 0], torch.tensor([1.0, 0.0, 0.0]))
    # t follows the height as in uv_sphere, whatever the file's own convention
    torch.testing.assert_close(m.pos[:, 1], -torch.cos(torch.pi * m.uv[:, 1]), atol=1e-5, rtol=0)


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nothing.obj"):
        mesh.load(tmp_path / "nothing.obj")
    cloud = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    (tmp_path / "cloud.ply").write_text(cloud + "end_header\n0 0 0\n1 1 1\n")
    with pytest.raises(ValueError, match="no triangles"):
        mesh.load(tmp_path / "cloud.ply")
    monkeypatch.setitem(sys.modules, "trimesh", None)
    with pytest.raises(ImportError, match="pip install"):
        mesh.load(tmp_path / "cloud.ply")
