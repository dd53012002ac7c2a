"""The few OpenGL entry points the visibility pass calls itself, through ctypes instead of ModernGL.

Two reasons: ModernGL keeps the GIL for the whole of a call, while a ctypes call releases it,
so a draw (llvmpipe runs vertex processing and triangle setup on the calling thread) or a
readback (which waits for the rasterizer) lets other threads drive other GL contexts
meanwhile; and ModernGL cannot map a buffer. The entry points come from eglGetProcAddress:
glvnd's are dispatch stubs that call into whichever context is current on the calling
thread (EGL's or GLX's), so one binding serves every context.
"""

from __future__ import annotations

import ctypes
import functools

from . import egl

GL_TRIANGLES = 0x0004
GL_ARRAY_BUFFER = 0x8892
GL_MAP_WRITE_BIT = 0x0002
GL_MAP_INVALIDATE_BUFFER_BIT = 0x0008
GL_READ_FRAMEBUFFER = 0x8CA8
GL_COLOR_ATTACHMENT0 = 0x8CE0
GL_DEPTH_COMPONENT = 0x1902
FLOAT_FORMATS = (0x1903, 0x8227, 0x1907, 0x1908)  # GL_RED, GL_RG, GL_RGB, GL_RGBA
INTEGER_FORMATS = (0x8D94, 0x8228, 0x8D98, 0x8D99)  # their _INTEGER variants
GL_UNSIGNED_INT = 0x1405
GL_FLOAT = 0x1406
GL_SUBPIXEL_BITS = 0x0D50

_u32, _i32, _vp = ctypes.c_uint32, ctypes.c_int32, ctypes.c_void_p
_SIGNATURES = {
    "glUseProgram": (None, _u32),
    "glBindVertexArray": (None, _u32),
    "glDrawArrays": (None, _u32, _i32, _i32),
    "glReadPixels": (None, _i32, _i32, _i32, _i32, _u32, _u32, _vp),
    "glBindFramebuffer": (None, _u32, _u32),
    "glReadBuffer": (None, _u32),
    "glBindBuffer": (None, _u32, _u32),
    "glMapBufferRange": (_vp, _u32, ctypes.c_ssize_t, ctypes.c_ssize_t, _u32),
    "glUnmapBuffer": (ctypes.c_uint8, _u32),
    "glGetIntegerv": (None, _u32, ctypes.POINTER(_i32)),
    "glFlush": (None,),
}


class _Calls:
    def __init__(self) -> None:
        lib = egl._egl().lib
        for name, (restype, *argtypes) in _SIGNATURES.items():
            address = lib.eglGetProcAddress(name.encode())
            if not address:
                raise RuntimeError(f"glrast: eglGetProcAddress found no {name} in {egl.library_name()}")
            setattr(self, name, ctypes.CFUNCTYPE(restype, *argtypes)(address))


@functools.cache
def gl() -> _Calls:
    """The bound entry points (loaded once per process); call them with a context current."""
    return _Calls()


def integer(name: int) -> int:
    """glGetIntegerv of one value."""
    value = _i32()
    gl().glGetIntegerv(name, ctypes.byref(value))
    return value.value


def draw_triangles(program: int, vertex_array: int, first_vertex: int, vertices: int) -> None:
    """glDrawArrays(GL_TRIANGLES) of `program` over `vertex_array` (GL object names)."""
    calls = gl()
    calls.glUseProgram(program)
    calls.glBindVertexArray(vertex_array)
    calls.glDrawArrays(GL_TRIANGLES, first_vertex, vertices)


def flush() -> None:
    """glFlush: start executing the commands issued so far."""
    gl().glFlush()


def bind_read_framebuffer(framebuffer: int) -> None:
    gl().glBindFramebuffer(GL_READ_FRAMEBUFFER, framebuffer)


def read_buffer(attachment: int) -> None:
    """Read from colour attachment `attachment` of the bound read framebuffer."""
    gl().glReadBuffer(GL_COLOR_ATTACHMENT0 + attachment)


def read_pixels(viewport: tuple[int, int, int, int], format: int, type: int, address: int) -> None:
    """glReadPixels of the bound read framebuffer's viewport into memory at `address`."""
    x, y, width, height = viewport
    gl().glReadPixels(x, y, width, height, format, type, address)


def map_buffer(buffer: int, nbytes: int) -> int:
    """Map the first `nbytes` of GL buffer `buffer` for writing; returns the address.
    Synchronized: a CPU draw maps the buffer again for each run while the last run's draw may
    still be pending, so the GL must wait for it or rename the storage (llvmpipe has fetched a
    draw's vertices before the call returns, and does neither)."""
    calls = gl()
    calls.glBindBuffer(GL_ARRAY_BUFFER, buffer)
    address = calls.glMapBufferRange(GL_ARRAY_BUFFER, 0, nbytes, GL_MAP_WRITE_BIT)
    if not address:
        raise RuntimeError(f"glrast: glMapBufferRange of {nbytes} bytes of the corner buffer failed")
    return address


def unmap_buffer(buffer: int) -> None:
    calls = gl()
    calls.glBindBuffer(GL_ARRAY_BUFFER, buffer)
    calls.glUnmapBuffer(GL_ARRAY_BUFFER)
