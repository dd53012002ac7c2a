"""Shared by the benchmark scripts: the icosphere scene and a timing loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from glrast import camera, mesh

LEVELS = {"5k": 4, "80k": 6, "1.3M": 8}


def icosphere_scene(level: int, soup: bool = False):
    """(pos [1, V, 4] clip space, tri [T, 3], colours [V, 3]) of the unit icosphere seen from
    distance 3 with a 45 degree vertical field of view. soup: every triangle gets its own
    three vertices, so that no edge is shared."""
    verts, tri = mesh.icosphere(level)
    if soup:
        verts, tri = verts[tri.long().flatten()], torch.arange(3 * tri.shape[0], dtype=torch.int32).view(-1, 3)
    mvp = camera.perspective(45.0, 1.0, 0.1, 10.0) @ camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0))
    return camera.transform(mvp, verts), tri, colors


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, runs: int) -> tuple[float, float]:
    """(first call, median of `runs` calls after one warm-up), in milliseconds."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * first, 1e3 * statistics.median(times)
