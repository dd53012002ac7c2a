"""Plain-torch reference implementations: an independent oracle for the kernels.

Written for clarity, differentiated by torch autograd, never used by glrast
itself. One module per primitive; everything is re-exported here.
"""

from .antialias import *  # noqa: F401,F403
from .raster import *  # noqa: F401,F403
from .texture import *  # noqa: F401,F403
