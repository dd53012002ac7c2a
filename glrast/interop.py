"""GL render targets -> torch tensors.

CPU tensors: glReadPixels straight into the output tensor's memory (one copy).

CUDA tensors: CUDA-GL interop, no trip through host memory. The render target
textures are registered with CUDA (read-only) once per allocation; each copy maps
them on torch's current stream, copies the viewport from the mapped CUDA array
into the output tensor with cuMemcpy2DAsync on that stream, and unmaps them.
Mapping orders the copy after the GL commands issued before it, and unmapping
orders GL commands issued after it behind the copy, so nothing waits on the host.
Registrations are dropped (`TargetReader.reset`) before the textures are
reallocated or released. Both the GL and the CUDA context must be current; the
GL context must be NVIDIA's, on the tensor's GPU (see egl.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import torch

from . import cuda_driver

GL_TEXTURE_2D = 0x0DE1

# Likely causes of a pending glGetError code when a CUDA interop call fails, by name
# (as ModernGL's Context.error spells them).
GL_ERROR_HINTS: dict[str, str] = {
    "GL_INVALID_ENUM": "a GL call got an unknown enum (a format or target this GL does not support)",
    "GL_INVALID_VALUE": "a GL call got an out-of-range value (a size above this GL's limits?)",
    "GL_INVALID_OPERATION": "a GL call was invalid in the current state (an object of another context, or a "
    "context that is not current on this thread)",
    "GL_INVALID_FRAMEBUFFER_OPERATION": "the framebuffer is incomplete",
    "GL_OUT_OF_MEMORY": "the GPU ran out of memory for GL objects",
    "GL_CONTEXT_LOST": "the GL context was lost (GPU reset)",
}
_RESOURCE_GONE = ("CUDA_ERROR_DEINITIALIZED", "CUDA_ERROR_CONTEXT_IS_DESTROYED")


def gl_error_message(code: str) -> str:
    """'<GL_ERROR>: <likely cause>' for a glGetError name; '' for GL_NO_ERROR."""
    if code in ("", "GL_NO_ERROR"):
        return ""
    return f"{code}: {GL_ERROR_HINTS.get(code, 'unexpected GL error')}"


def interop_error_message(err: object, what: str, gl_error: str = "GL_NO_ERROR") -> str:
    """The message for a failed CUDA-GL interop call: the CUDA error and its likely
    cause, plus the GL error that was pending, which often is the real cause."""
    message = cuda_driver.cuda_error_message(err, what)
    pending = gl_error_message(gl_error)
    return f"{message}. A GL error was pending: {pending}" if pending else message


class CudaTargets:
    """GL textures registered with CUDA for reading, on one device."""

    def __init__(self, gl: Any, textures: Sequence[Any], device: torch.device):
        from cuda.bindings import driver

        self.gl = gl
        self.device = device
        self._driver = driver
        self.resources: list[Any] = []
        flags = driver.CUgraphicsRegisterFlags.CU_GRAPHICS_REGISTER_FLAGS_READ_ONLY
        try:
            with cuda_driver.cuda_context(device):
                for tex in textures:
                    self.resources.append(
                        self._check(driver.cuGraphicsGLRegisterImage(tex.glo, GL_TEXTURE_2D, flags), "registering")
                    )
        except BaseException:
            self.release()  # leave no texture registered behind a half-made set
            raise

    def _check(self, result: tuple, what: str):
        if int(result[0]) != 0:
            message = interop_error_message(result[0], f"CUDA-GL interop on {self.device} ({what})", self.gl.error)
            raise cuda_driver.CudaError(message)
        return cuda_driver.check_cuda(result, what)

    def copy(self, outs: Sequence[tuple[int, torch.Tensor]], viewport: tuple[int, int, int, int]) -> None:
        """Copy the viewport of registered texture `i` into `out` for each (i, out);
        out: [H, W] or [H, W, C], contiguous, on this device, its element type that of
        the texture's texels. Asynchronous on torch's stream."""
        driver = self._driver
        x, y, width, height = viewport
        stream = torch.cuda.current_stream(self.device).cuda_stream
        handles = [self.resources[i] for i, _ in outs]
        # cuGraphicsMapResources takes the address of a C array of resource handles.
        handle_array = (ctypes.c_void_p * len(handles))(*(int(h) for h in handles))
        address = ctypes.addressof(handle_array)
        with cuda_driver.cuda_context(self.device):
            self._check(driver.cuGraphicsMapResources(len(handles), address, stream), "mapping")
            try:
                for handle, (_, out) in zip(handles, outs):
                    pixel_bytes = out.numel() // (width * height) * out.element_size()
                    array = self._check(driver.cuGraphicsSubResourceGetMappedArray(handle, 0, 0), "mapped array")
                    desc = driver.CUDA_MEMCPY2D()
                    desc.srcMemoryType = driver.CUmemorytype.CU_MEMORYTYPE_ARRAY
                    desc.srcArray = array
                    desc.srcXInBytes = x * pixel_bytes
                    desc.srcY = y
                    desc.dstMemoryType = driver.CUmemorytype.CU_MEMORYTYPE_DEVICE
                    desc.dstDevice = out.data_ptr()
                    desc.dstPitch = width * pixel_bytes
                    desc.WidthInBytes = width * pixel_bytes
                    desc.Height = height
                    self._check(driver.cuMemcpy2DAsync(desc, stream), "copy")
            except BaseException:
                driver.cuGraphicsUnmapResources(len(handles), address, stream)
                raise
            self._check(driver.cuGraphicsUnmapResources(len(handles), address, stream), "unmapping")

    def release(self) -> None:
        """Unregister every texture (idempotent); needs the GL context current.
        Errors from a CUDA that is already shutting down are ignored."""
        driver = self._driver
        resources, self.resources = self.resources, []
        if not resources:
            return
        failure = None
        with cuda_driver.cuda_context(self.device):
            for res in resources:
                (err,) = driver.cuGraphicsUnregisterResource(res)
                if int(err) != 0 and err.name not in _RESOURCE_GONE and failure is None:
                    failure = interop_error_message(err, f"CUDA-GL interop on {self.device} (unregistering)")
        if failure:
            raise cuda_driver.CudaError(failure)


class TargetReader:
    """Copies a framebuffer's colour attachments into tensors, for one RasterPipeline.

    Holds the CUDA registrations of the current render targets: they are made on
    the first CUDA copy after an allocation; call `reset()` before the textures are
    released or reallocated."""

    def __init__(self) -> None:
        self._cuda: CudaTargets | None = None

    def read(
        self,
        fbo: Any,
        outs: Sequence[tuple[int, torch.Tensor]],  # (colour attachment, [H, W] or [H, W, C] contiguous)
        viewport: tuple[int, int, int, int],  # (x, y, width, height) in pixels; rows bottom-up as GL stores them
    ) -> None:
        """Copy each listed attachment's viewport into its tensor (all on one device)."""
        device = outs[0][1].device
        if device.type == "cpu":
            for attachment, out in outs:
                components = out.numel() // (viewport[2] * viewport[3])
                dtype = "f4" if out.is_floating_point() else "u4"
                fbo.read_into(out.numpy(), viewport=viewport, components=components, attachment=attachment, dtype=dtype)
            return
        if self._cuda is None:
            self._cuda = CudaTargets(fbo.ctx, fbo.color_attachments, device)
        self._cuda.copy(outs, viewport)

    def reset(self) -> None:
        """Drop the CUDA registrations (before the render targets change or go away)."""
        cuda, self._cuda = self._cuda, None
        if cuda is not None:
            cuda.release()
