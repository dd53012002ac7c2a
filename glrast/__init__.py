"""glrast: differentiable rasterization with a GL visibility pass and custom kernels.

Drop-in for ``import nvdiffrast.torch as dr``: ``import glrast as dr``.

The public names load on first use (PEP 562), so ``import glrast`` imports
neither torch nor ModernGL, compiles nothing and opens no GL context; the
`glrast` command answers ``--help`` without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module of glrast that defines it
_EXPORTS = {
    "RasterizeGLContext": "context",
    "RasterizeCudaContext": "context",
    "rasterize": "raster",
    "DepthPeeler": "raster",
    "triangle_index": "ids",
    "interpolate": "interpolation",
    "texture": "texturing",
    "texture_construct_mip": "texturing",
    "antialias": "antialiasing",
    "antialias_construct_topology_hash": "antialiasing",
    "get_log_level": "_log",
    "set_log_level": "_log",
    "doctor": "diagnostics",
    "Viewer": "viewer",
    "ViewerUnavailableError": "viewer",
    "show": "viewer",
}
_SUBMODULES = ("camera", "mesh")

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]

if TYPE_CHECKING:  # the same names for type checkers, which do not run __getattr__
    from . import camera as camera
    from . import mesh as mesh
    from ._log import get_log_level as get_log_level
    from ._log import set_log_level as set_log_level
    from .antialiasing import antialias as antialias
    from .antialiasing import antialias_construct_topology_hash as antialias_construct_topology_hash
    from .context import RasterizeCudaContext as RasterizeCudaContext
    from .context import RasterizeGLContext as RasterizeGLContext
    from .diagnostics import doctor as doctor
    from .ids import triangle_index as triangle_index
    from .interpolation import interpolate as interpolate
    from .raster import DepthPeeler as DepthPeeler
    from .raster import rasterize as rasterize
    from .texturing import texture as texture
    from .texturing import texture_construct_mip as texture_construct_mip
    from .viewer import Viewer as Viewer
    from .viewer import ViewerUnavailableError as ViewerUnavailableError
    from .viewer import show as show


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'glrast' has no attribute {name!r}")
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
