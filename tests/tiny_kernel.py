"""A tiny kernel tree for the kernel-cache tests (compiles in a fraction of a second)."""

import ctypes
import shutil
import textwrap
from pathlib import Path

from glrast import kernels
from glrast.params import Params

TINY_HEADER = "#pragma once\n#define TINY_VALUE 7.0f\n"
TINY_SOURCE = textwrap.dedent(
    """
    #include "common.h"
    #include "tiny.h"
    struct TinyParams { float* out; };
    GLRAST_LAYOUT(TinyParams, out)
    GLRAST_KERNEL(tiny_fill, TinyParams) { p.out[i] = TINY_VALUE; }
    """
)

# For subprocesses: `python -c RUN_TINY CSRC` builds (or loads) tiny from CSRC into
# $GLRAST_CACHE_DIR, launches it and prints the cached path and the values it wrote.
RUN_TINY = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from tiny_kernel import fill
from glrast import kernels
kernels.csrc_dir = lambda: Path(sys.argv[1])
values = fill(kernels.HostModule("tiny"))
print(kernels.build_host("tiny"))
print(values)
"""


class TinyParams(Params):
    _fields_ = [("out", ctypes.c_void_p)]


def write_tree(root: Path) -> tuple[Path, Path]:
    """csrc/ with one small kernel (and glrast's csrc/common.h) under root, and the path of an
    empty cache: (csrc, cache)."""
    csrc, cache = root / "csrc", root / "cache"
    csrc.mkdir()
    (csrc / "tiny.h").write_text(TINY_HEADER)
    (csrc / "tiny.cu").write_text(TINY_SOURCE)
    shutil.copy(kernels.csrc_dir() / "common.h", csrc / "common.h")
    return csrc, cache


def fill(module) -> list[float]:
    """What tiny_fill writes into 5 floats through `module` (a HostModule)."""
    out = (ctypes.c_float * 5)()
    module.launch("tiny_fill", TinyParams(out=ctypes.addressof(out)), 5)
    return list(out)


def leftovers(cache: Path) -> list[Path]:
    """Build folders left in the cache."""
    return list(cache.glob(".build-*")) if cache.exists() else []
