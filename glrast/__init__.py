"""glrast: differentiable rasterization with a GL visibility pass and custom kernels.

Drop-in for ``import nvdiffrast.torch as dr``: ``import glrast as dr``.
"""

from . import camera, mesh
from ._log import get_log_level, set_log_level
from ._version import __version__
from .antialias import antialias, antialias_construct_topology_hash
from .context import RasterizeCudaContext, RasterizeGLContext
from .doctor import doctor
from .interpolate import interpolate
from .raster import DepthPeeler, rasterize, triangle_index
from .texture import texture, texture_construct_mip
from .viewer import Viewer, ViewerUnavailableError, show

__all__ = [
    "DepthPeeler",
    "RasterizeCudaContext",
    "RasterizeGLContext",
    "Viewer",
    "ViewerUnavailableError",
    "__version__",
    "antialias",
    "camera",
    "antialias_construct_topology_hash",
    "doctor",
    "get_log_level",
    "interpolate",
    "mesh",
    "rasterize",
    "set_log_level",
    "show",
    "texture",
    "texture_construct_mip",
    "triangle_index",
]
