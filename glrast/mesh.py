"""Mesh helpers: loading files (through trimesh), differentiable vertex normals,
and procedural meshes (icosphere, cube, UV sphere) that need no download.

Triangles are wound counter-clockwise seen from outside (right-hand rule:
``cross(p1 - p0, p2 - p0)`` points outwards). Positions are float32, indices int32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _checks


@dataclass
class Mesh:
    """A triangle mesh as tensors, ready for rasterize/interpolate/texture."""

    pos: torch.Tensor  # [V, 3] float32
    tri: torch.Tensor  # [T, 3] int32
    normals: torch.Tensor  # [V, 3] float32, unit length, area-weighted (see `vertex_normals`)
    uv: torch.Tensor | None = None  # [V, 2] float32, (0, 0) = bottom-left of the texture image (OpenGL/OBJ)
    colors: torch.Tensor | None = None  # [V, 3] float32 in [0, 1], per-vertex colours of the file
    texture: torch.Tensor | None = None  # [h, w, 3] float32 in [0, 1]; row 0 is the image's bottom row (t = 0)


def vertex_normals(pos: torch.Tensor, tri: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Area-weighted vertex normals, differentiable with respect to `pos`.

    pos: [V, 3] or [N, V, 3] float; tri: [T, 3] integer indices.
    Each face contributes ``cross(p1 - p0, p2 - p0)`` (its normal scaled by twice
    its area) to its three vertices; the sums are normalized. A vertex of no
    face, or whose contributions cancel, gets the zero vector.
    Returns a tensor shaped like `pos`.
    """
    if pos.shape[-1] != 3 or pos.ndim not in (2, 3):
        raise ValueError(f"vertex_normals: pos must have shape [V, 3] or [N, V, 3], got {list(pos.shape)}")
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.is_floating_point():
        raise ValueError(f"vertex_normals: tri must be an integer tensor of shape [T, 3], got {list(tri.shape)}")
    tri = tri.long().to(pos.device)
    _checks.triangles("vertex_normals", tri, pos.shape[-2])
    # In float64: differences, cross products and squared lengths of float32 positions near the float
    # limit would overflow (and those of tiny positions underflow) in float32.
    work = pos.double() if pos.dtype in (torch.float16, torch.bfloat16, torch.float32) else pos
    p0, p1, p2 = (work[..., tri[:, k], :] for k in range(3))
    face = torch.linalg.cross(p1 - p0, p2 - p0)
    acc = torch.zeros_like(work)
    for k in range(3):
        acc = acc.index_add(-2, tri[:, k], face)
    # normalize with a floor on the squared length so that zero sums stay zero (and finite in backward)
    return (acc * torch.rsqrt((acc * acc).sum(-1, keepdim=True).clamp_min(eps))).to(pos.dtype)


def _as_tensors(pos: np.ndarray, tri: np.ndarray, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(pos.astype(np.float32), device=device),
        torch.as_tensor(tri.astype(np.int32), device=device),
    )


def _base_icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """The 12 vertices (on the unit sphere) and 20 faces every icosphere level starts from."""
    g = (1.0 + 5.0**0.5) / 2.0
    verts = np.array(
        [[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0],
         [0, -1, g], [0, 1, g], [0, -1, -g], [0, 1, -g],
         [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    faces = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
         [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
         [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
         [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )  # fmt: skip
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    # orient every face counter-clockwise seen from outside: its normal must point away from the centre
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces


def _split_faces(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One subdivision step: a new vertex on every edge (projected onto the sphere), four faces per face.

    New vertices are numbered after the old ones in increasing order of the edge key
    lo * V + hi (lo < hi its end points); the face list holds first every face's
    corner-0 child, then the corner-1 children, the corner-2 children, the middle faces.
    """
    n = len(verts)
    ends = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1)  # [F, 3 edges, 2]
    key = (ends.min(axis=2) * n + ends.max(axis=2)).ravel()
    unique_keys, edge_of = np.unique(key, return_inverse=True)
    mids = verts[unique_keys // n] + verts[unique_keys % n]
    mids /= np.linalg.norm(mids, axis=1, keepdims=True)
    m01, m12, m20 = (edge_of.reshape(-1, 3) + n).T
    c0, c1, c2 = faces.T
    children = [
        np.stack([c0, m01, m20], axis=1),
        np.stack([c1, m12, m01], axis=1),
        np.stack([c2, m20, m12], axis=1),
        np.stack([m01, m12, m20], axis=1),
    ]
    return np.concatenate([verts, mids]), np.concatenate(children)


def icosphere(level: int = 3, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere subdivided `level` times: pos [10·4^L + 2, 3] float32, tri [20·4^L, 3] int32.

    The construction (vertex order, face order, outward counter-clockwise winding)
    is the one of the shared benchmark job, so benchmark meshes match peers' exactly.
    """
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 10:
        raise ValueError(f"icosphere: level must be an int in [0, 10], got {level!r}")
    verts, faces = _base_icosahedron()
    for _ in range(level):
        verts, faces = _split_faces(verts, faces)
    return _as_tensors(verts, faces, device)


def cube(device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cube [-1, 1]^3: pos [8, 3] float32 (vertex k has coordinates -1 or +1 by the bits of k:
    x = bit 0, y = bit 1, z = bit 2), tri [12, 3] int32, two triangles per face, wound outwards."""
    bits = np.arange(8)[:, None] >> np.arange(3) & 1
    verts = bits * 2.0 - 1.0
    quads = np.array(
        [[0, 4, 6, 2], [1, 3, 7, 5],  # -x, +x
         [0, 1, 5, 4], [2, 6, 7, 3],  # -y, +y
         [0, 2, 3, 1], [4, 5, 7, 6]],  # -z, +z
    )  # fmt: skip
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return _as_tensors(verts, faces, device)


def uv_sphere(rows: int = 32, cols: int = 64, device: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit sphere on a latitude-longitude grid, for equirectangular textures.

    Returns pos [(rows + 1)(cols + 1), 3], tri [2·rows·cols, 3] (wound outwards; the
    triangles at the poles are degenerate and cover nothing) and uv [(rows + 1)(cols + 1), 2]
    with s = longitude / 2π in [0, 1] (the seam is duplicated so that s is continuous per
    triangle) and t = 0 at the south pole (y = -1), 1 at the north pole.
    """
    if rows < 2 or cols < 3:
        raise ValueError(f"uv_sphere: needs rows >= 2 and cols >= 3, got rows={rows}, cols={cols}")
    t, s = np.meshgrid(np.linspace(0.0, 1.0, rows + 1), np.linspace(0.0, 1.0, cols + 1), indexing="ij")
    polar, azimuth = np.pi * (1.0 - t), 2.0 * np.pi * s
    verts = np.stack([np.sin(polar) * np.sin(azimuth), np.cos(polar), np.sin(polar) * np.cos(azimuth)], -1)
    idx = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]  # b is east of a, d north of a
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    pos, tri = _as_tensors(verts.reshape(-1, 3), faces, device)
    uv = torch.as_tensor(np.stack([s, t], -1).reshape(-1, 2).astype(np.float32), device=device)
    return pos, tri, uv


def _import_trimesh() -> Any:
    try:
        import trimesh
    except ImportError as e:
        raise ImportError(
            "glrast.mesh.load needs trimesh, an optional dependency: pip install 'glrast[examples]' "
            "(or pip install trimesh)"
        ) from e
    return trimesh


def _texture_image(visual: Any) -> np.ndarray | None:
    """The base colour image of a textured trimesh visual as float32 [h, w, 3], bottom row first."""
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    # trimesh gives a file with texture coordinates but no image a placeholder material (a 2x2
    # image of one grey); that is no texture
    from trimesh.visual.material import color_image

    if image.size == (2, 2) and np.array_equal(np.asarray(image.convert("RGBA")), np.asarray(color_image())):
        return None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb[::-1])


def load(path: str | Path, device: Any = None) -> Mesh:
    """Load a mesh file (OBJ, PLY, STL, GLB/glTF, OFF, ... anything trimesh reads) into tensors.

    Scenes are flattened into one mesh with their transforms applied. Vertices stay as
    the file has them (no merging or reordering), except that formats with per-corner
    texture coordinates (OBJ) get one vertex per distinct (position, uv) pair.
    Normals are recomputed with `vertex_normals` over the welded positions, so that
    vertices split at texture seams still get one smooth normal.
    """
    trimesh = _import_trimesh()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh.load: no such file: {path}")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises whatever its parser for the format meets
        raise ValueError(f"mesh.load: cannot read {path} as a mesh ({type(e).__name__}: {e})") from e
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise ValueError(f"mesh.load: {path} holds no geometry")
        loaded = loaded.to_mesh()
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"mesh.load: {path} holds no triangles (got {type(loaded).__name__})")
    pos, tri = _as_tensors(np.asarray(loaded.vertices), np.asarray(loaded.faces), device)

    uv = colors = texture = None
    visual = loaded.visual
    if getattr(visual, "uv", None) is not None and len(visual.uv) == len(pos):
        uv = torch.as_tensor(np.asarray(visual.uv, dtype=np.float32), device=device)
        image = _texture_image(visual)
        if image is not None:
            texture = torch.as_tensor(image, device=device)
    elif getattr(visual, "kind", None) == "vertex":
        rgba = np.asarray(visual.vertex_colors, dtype=np.float32) / 255.0
        colors = torch.as_tensor(rgba[:, :3], device=device)

    welded, index = torch.unique(pos, dim=0, return_inverse=True)
    normals = vertex_normals(welded, index[tri.long()])[index]
    return Mesh(pos=pos, tri=tri, normals=normals, uv=uv, colors=colors, texture=texture)
