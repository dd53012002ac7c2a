"""Argument validation shared by the public functions.

Every message names the function, the argument, what was expected and what was
received, so that a user can fix the call without reading glrast's source.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Sequence

import torch

# Float inputs in these dtypes are accepted where a function says so, and computed in float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    low_precision: bool = False,
) -> torch.Tensor:
    """Check type, dtype, rank and trailing size; return `t` made contiguous.

    `expected` is the shape as the user should read it, e.g. "[N, V, 4] or [V, 4]". With
    `low_precision`, float16 and bfloat16 are accepted too and returned as float32 (a copy
    that autograd casts the gradient back through).
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{fn}: {name} must be on a CPU or CUDA device, got {describe(t)}")
    given = t.dtype
    if given is not dtype and not (low_precision and given in LOW_PRECISION):  # dtypes are singletons
        also = " (or float16 / bfloat16, computed in float32)" if low_precision else ""
        raise TypeError(f"{fn}: {name} must have dtype {dtype}{also}, got {describe(t)}")
    if t.ndim not in ndims or (last is not None and t.shape[-1] != last):
        raise ValueError(f"{fn}: {name} must have shape {expected}, got {describe(t)}")
    return (t if given is dtype else t.to(dtype)).contiguous()


def same_device(fn: str, device: torch.device, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != device:
            raise ValueError(
                f"{fn}: all tensors must be on one device; {name} is on {t.device}, expected {device}"
            )


def triangles(fn: str, tri: torch.Tensor, num_vertices: int, holder: str = "pos") -> None:
    """Every index in `tri` must address one of the `num_vertices` vertices that `holder` (the
    argument that holds one row per vertex, e.g. "pos" or "attr") has.

    The ops call this (it reads the data, which would break a torch.compile graph). On CUDA reading
    the range synchronises with the device, so it is read once per tri tensor and remembered while
    that tensor lives and its version counter stays the same (every in-place torch op on it
    counts; writes that bypass the counter, through `.data` or a numpy or DLPack view of its
    memory, are not seen)."""
    if tri.numel() == 0:
        return
    lo, hi = _index_range(tri)
    if lo < 0 or hi >= num_vertices:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{fn}: tri holds vertex index {bad}, outside [0, {num_vertices}) "
            f"({holder} has {num_vertices} vertices)"
        )


def equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal(a, b); on CUDA remembered like `triangles`' index range (it synchronises)."""
    if a.device.type != "cuda":
        return torch.equal(a, b)
    kind = ("equal", id(b))
    known = _remembered(a, kind)
    if known is not None and known[0]() is b and known[1] == _version(b):
        return True
    same = torch.equal(a, b)
    if same and _version(b) is not None:
        _remember(a, kind, (weakref.ref(b), _version(b)))
    return same


def _index_range(tri: torch.Tensor) -> tuple[int, int]:
    if tri.device.type != "cuda":
        lo, hi = torch.aminmax(tri)
        return int(lo), int(hi)
    known = _remembered(tri, "range")
    if known is None:
        known = tuple(torch.stack(torch.aminmax(tri)).tolist())  # one synchronisation
        _remember(tri, "range", known)
    return known


# (id of a tensor, kind) -> (weak reference to it, its version counter then, a fact about its data)
_facts: dict[tuple[int, object], tuple[weakref.ref, int, object]] = {}


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter: nothing is remembered for them
        return None


def _remembered(t: torch.Tensor, kind: object) -> object:
    entry = _facts.get((id(t), kind))
    if entry is None or entry[0]() is not t or entry[1] != _version(t):
        return None
    return entry[2]


def _remember(t: torch.Tensor, kind: object, fact: object) -> None:
    version = _version(t)
    if version is None:
        return
    key = (id(t), kind)
    _facts[key] = (weakref.ref(t, lambda _, key=key: _facts.pop(key, None)), version, fact)


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
