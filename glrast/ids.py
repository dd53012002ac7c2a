"""The triangle-id encoding of rast[..., 3], Python's one copy of it.

rast[..., 3] holds id + 1 as an exact float up to 2^24; above that, the float
whose bit pattern is BITS_BASE + id + 1 (monotone, so comparisons of the
channel still order ids, and continuous at 2^24). LIMIT is the largest id + 1
that the encoding holds (its bit pattern is FLT_MAX's). The kernels' copy is in
csrc/common.h (checked against this one when a kernel module loads), and the
fragment shader's is generated from this one (`glsl_defines`).
"""

from __future__ import annotations

import torch

from . import _checks

EXACT_MAX = 1 << 24  # ids + 1 up to here are stored as exact floats
BITS_BASE = 0x4A800000  # BITS_BASE + 2^24 is the bit pattern of the float 2^24
LIMIT = 0x34FFFFFF  # BITS_BASE + LIMIT = 0x7F7FFFFF, the bit pattern of FLT_MAX

# Names of the same constants in csrc/common.h (GLRAST_CONSTANTS(triangle_ids, ...)).
C_CONSTANTS = {"GLRAST_ID_EXACT_MAX": EXACT_MAX, "GLRAST_ID_BITS_BASE": BITS_BASE, "GLRAST_ID_LIMIT": LIMIT}


def glsl_defines() -> str:
    """#define lines giving a shader the encoding (ID_EXACT_MAX, ID_BITS_BASE)."""
    return f"#define ID_EXACT_MAX {EXACT_MAX}.0\n#define ID_BITS_BASE {BITS_BASE:#x}u\n"


def triangle_index(rast: torch.Tensor) -> torch.Tensor:  # [..., 4] -> [...]
    """Decode rast[..., 3] into int64 triangle ids (-1 where the pixel is empty)."""
    rast = _checks.tensor("triangle_index", "rast", rast, "[..., 4]", ndims=range(1, 9), last=4)
    w = rast[..., 3].contiguous()
    bits = w.view(torch.int32).to(torch.int64)
    small = w.to(torch.int64) - 1
    large = bits - BITS_BASE - 1
    ids = torch.where(w <= float(EXACT_MAX), small, large)
    return torch.where(w > 0, ids, torch.full_like(ids, -1))
