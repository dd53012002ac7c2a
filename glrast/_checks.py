"""Argument validation shared by the public functions.

Every message names the function, the argument, what was expected and what was
received, so that a user can fix the call without reading glrast's source.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch


def describe(t: torch.Tensor) -> str:
    return f"shape {list(t.shape)}, dtype {t.dtype}, device {t.device}"


def tensor(
    fn: str,
    name: str,
    t: object,
    expected: str,
    *,
    ndims: Sequence[int],
    last: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Check type, dtype, rank and trailing size; return `t` made contiguous.

    `expected` is the shape as the user should read it, e.g. "[N, V, 4] or [V, 4]".
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{fn}: {name} must be on a CPU or CUDA device, got {describe(t)}")
    if t.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {dtype}, got {describe(t)}")
    if t.ndim not in ndims or (last is not None and t.shape[-1] != last):
        raise ValueError(f"{fn}: {name} must have shape {expected}, got {describe(t)}")
    return t.contiguous()


def same_device(fn: str, device: torch.device, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(
                f"{fn}: all tensors must be on one device; {name} is on {t.device}, expected {device}"
            )


def triangles(fn: str, tri: torch.Tensor, num_vertices: int, holder: str = "pos") -> None:
    """Every index in `tri` must address one of the `num_vertices` vertices that `holder` (the
    argument that holds one row per vertex, e.g. "pos" or "attr") has."""
    if tri.numel() == 0:
        return
    lo, hi = int(tri.min()), int(tri.max())
    if lo < 0 or hi >= num_vertices:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{fn}: tri holds vertex index {bad}, outside [0, {num_vertices}) "
            f"({holder} has {num_vertices} vertices)"
        )


def resolution(fn: str, res: object, limit: int) -> tuple[int, int]:
    try:
        h, w = (operator.index(x) for x in res)  # type: ignore[union-attr]  # ints and integer scalars
        ok = not any(isinstance(x, bool) for x in res)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"{fn}: resolution must be a pair of ints (height, width), got {res!r}")
    if h < 1 or w < 1 or h > limit or w > limit:
        raise ValueError(
            f"{fn}: resolution {(h, w)} out of range: each side must be in [1, {limit}] "
            f"(the GL limit of this context)"
        )
    return h, w
