"""Small test scenes shared by the test files (pixel-space triangles, random scenes)."""

import torch

F32 = dict(dtype=torch.float32)


def tri_tensor(rows, device="cpu"):
    return torch.tensor(rows, dtype=torch.int32, device=device)


def screen_triangle(points, h, w, z=0.0, wclip=1.0):
    """Clip-space vertices [3, 4] of a triangle given in pixel coordinates."""
    rows = []
    for (px, py), wc in zip(points, wclip if isinstance(wclip, (list, tuple)) else [wclip] * 3):
        rows.append([(2 * px / w - 1) * wc, (2 * py / h - 1) * wc, z * wc, wc])
    return torch.tensor(rows, **F32)


def random_scene(num_tris=12, num_images=2, seed=0):
    """Random perspective triangles in front of the camera, overlapping each other."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(num_images, 3 * num_tris, 3, generator=g) * 2 - 1
    wc = 1.0 + torch.rand(num_images, 3 * num_tris, 1, generator=g) * 2
    pos = torch.cat([verts[..., :2] * wc * 0.9, verts[..., 2:] * 0.5 * wc, wc], -1)
    tri = torch.arange(3 * num_tris, dtype=torch.int32).view(num_tris, 3)
    return pos.contiguous(), tri
