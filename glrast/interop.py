"""GL render targets -> torch tensors, and tensors -> a GL texture (the viewer's image).

CPU tensors: glReadPixels straight into the output tensor's memory (one copy), through
ctypes (glrast/glcalls.py: the GIL is released while it waits for the rasterizer).

CUDA tensors: CUDA-GL interop, no trip through host memory. The render target
textures are registered with CUDA (read-only) once per allocation; each copy maps
them on torch's current stream, copies the viewport from the mapped CUDA array
into the output tensor with cuMemcpy2DAsync on that stream, and unmaps them.
Mapping orders the copy after the GL commands issued before it, and unmapping
orders GL commands issued after it behind the copy, so nothing waits on the host.
Registrations are dropped (`TargetReader.reset`) before the textures are
reallocated or released. Both the GL and the CUDA context must be current; the
GL context must be NVIDIA's, on the tensor's GPU (see egl.py).

The other direction (`TextureWriter`) is the same with the roles swapped: the
texture is registered write-discard, and the copy goes from the tensor into the
mapped array; CPU tensors are handed to glTexSubImage2D straight from their memory.
`CudaBuffer` registers a GL buffer write-discard the same way, for kernels that write
into it on torch's stream (the rasterizer's triangle corners).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from . import cuda_driver, glcalls

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


class _Registered:
    """GL objects registered with CUDA on one device, mapped on torch's current stream."""

    def __init__(self, gl: Any, device: torch.device, register: Callable[[Any], list[tuple]]):
        """register(driver) -> the cuGraphicsGLRegister* results, one per object (called in the device's
        context; a failure leaves nothing registered)."""
        from cuda.bindings import driver

        self.gl = gl
        self.device = device
        self._driver = driver
        self.resources: list[Any] = []
        try:
            with cuda_driver.cuda_context(device):
                for result in register(driver):
                    self.resources.append(self._check(result, "registering"))
        except BaseException:
            self.release()  # leave nothing registered behind a half-made set
            raise

    def _check(self, result: tuple, what: str):
        if int(result[0]) != 0:
            message = interop_error_message(result[0], f"CUDA-GL interop on {self.device} ({what})", self.gl.error)
            raise cuda_driver.CudaError(message)
        return cuda_driver.check_cuda(result, what)

    @contextlib.contextmanager
    def _mapped(self, handles: Sequence[Any]) -> Iterator[int]:
        """Map `handles` on torch's current stream, in the device's context; yields the stream.
        Unmapped on the same stream afterwards, also when the body fails."""
        driver = self._driver
        stream = torch.cuda.current_stream(self.device).cuda_stream
        # cuGraphicsMapResources takes the address of a C array of resource handles.
        handle_array = (ctypes.c_void_p * len(handles))(*(int(h) for h in handles))
        address = ctypes.addressof(handle_array)
        with cuda_driver.cuda_context(self.device):
            self._check(driver.cuGraphicsMapResources(len(handles), address, stream), "mapping")
            try:
                yield stream
            except BaseException:
                driver.cuGraphicsUnmapResources(len(handles), address, stream)
                raise
            self._check(driver.cuGraphicsUnmapResources(len(handles), address, stream), "unmapping")

    def release(self) -> None:
        """Unregister everything (idempotent); needs the GL context current.
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


class CudaTargets(_Registered):
    """GL textures registered with CUDA on one device: render targets read into tensors
    (`copy`), or, with write=True, textures filled from tensors (`write`, e.g. a viewer's image)."""

    def __init__(self, gl: Any, textures: Sequence[Any], device: torch.device, write: bool = False):
        def register(driver):
            flags = driver.CUgraphicsRegisterFlags
            flag = (
                flags.CU_GRAPHICS_REGISTER_FLAGS_WRITE_DISCARD if write else flags.CU_GRAPHICS_REGISTER_FLAGS_READ_ONLY
            )
            return (driver.cuGraphicsGLRegisterImage(tex.glo, GL_TEXTURE_2D, flag) for tex in textures)

        super().__init__(gl, device, register)

    def copy(self, outs: Sequence[tuple[int, torch.Tensor]], viewport: tuple[int, int, int, int]) -> None:
        """Copy the viewport of registered texture `i` into `out` for each (i, out);
        out: [H, W] or [H, W, C], contiguous, on this device, its element type that of
        the texture's texels. Asynchronous on torch's stream."""
        self._transfer(outs, viewport, to_tensor=True)

    def write(self, ins: Sequence[tuple[int, torch.Tensor]], viewport: tuple[int, int, int, int]) -> None:
        """Copy each tensor into the viewport of registered texture `i` for each (i, tensor), the
        counterpart of `copy` (same shapes and rules; row 0 of the tensor goes to texel row y)."""
        self._transfer(ins, viewport, to_tensor=False)

    def _transfer(
        self, pairs: Sequence[tuple[int, torch.Tensor]], viewport: tuple[int, int, int, int], to_tensor: bool
    ) -> None:
        driver = self._driver
        memory = driver.CUmemorytype
        x, y, width, height = viewport
        handles = [self.resources[i] for i, _ in pairs]
        with self._mapped(handles) as stream:
            for handle, (_, tensor) in zip(handles, pairs):
                pixel_bytes = tensor.numel() // (width * height) * tensor.element_size()
                array = self._check(driver.cuGraphicsSubResourceGetMappedArray(handle, 0, 0), "mapped array")
                desc = driver.CUDA_MEMCPY2D()
                if to_tensor:
                    desc.srcMemoryType, desc.srcArray = memory.CU_MEMORYTYPE_ARRAY, array
                    desc.srcXInBytes, desc.srcY = x * pixel_bytes, y
                    desc.dstMemoryType, desc.dstDevice = memory.CU_MEMORYTYPE_DEVICE, tensor.data_ptr()
                    desc.dstPitch = width * pixel_bytes
                else:
                    desc.srcMemoryType, desc.srcDevice = memory.CU_MEMORYTYPE_DEVICE, tensor.data_ptr()
                    desc.srcPitch = width * pixel_bytes
                    desc.dstMemoryType, desc.dstArray = memory.CU_MEMORYTYPE_ARRAY, array
                    desc.dstXInBytes, desc.dstY = x * pixel_bytes, y
                desc.WidthInBytes = width * pixel_bytes
                desc.Height = height
                self._check(driver.cuMemcpy2DAsync(desc, stream), "copy")


class CudaBuffer(_Registered):
    """A GL buffer registered with CUDA (write-discard) on one device: kernels on torch's stream
    write into it while it is mapped (`mapped`), and GL commands issued after the unmap see what
    they wrote. Re-register (a new CudaBuffer) after the buffer's storage is reallocated."""

    def __init__(self, gl: Any, buffer: Any, device: torch.device):
        def register(driver):
            flag = driver.CUgraphicsRegisterFlags.CU_GRAPHICS_REGISTER_FLAGS_WRITE_DISCARD
            return [driver.cuGraphicsGLRegisterBuffer(buffer.glo, flag)]

        super().__init__(gl, device, register)

    @contextlib.contextmanager
    def mapped(self) -> Iterator[int]:
        """The buffer's device address while mapped on torch's current stream."""
        with self._mapped(self.resources) as _:
            address, _size = self._check(
                self._driver.cuGraphicsResourceGetMappedPointer(self.resources[0]), "mapped pointer"
            )
            yield int(address)


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
        """Copy each listed attachment's viewport into its tensor (all on one device). On the CPU,
        attachment -1 is the depth buffer (read as float32 in [0, 1]); colour attachments are read
        as their texels' type (unsigned integer targets into int32 tensors, float into float32)."""
        device = outs[0][1].device
        if device.type == "cpu":
            glcalls.bind_read_framebuffer(fbo.glo)
            for attachment, out in outs:
                components = out.numel() // (viewport[2] * viewport[3])
                if attachment < 0:
                    layout = (glcalls.GL_DEPTH_COMPONENT, glcalls.GL_FLOAT)
                else:
                    glcalls.read_buffer(attachment)
                    formats = glcalls.FLOAT_FORMATS if out.is_floating_point() else glcalls.INTEGER_FORMATS
                    layout = (
                        formats[components - 1],
                        glcalls.GL_FLOAT if out.is_floating_point() else glcalls.GL_UNSIGNED_INT,
                    )
                glcalls.read_pixels(viewport, *layout, out.data_ptr())
            return
        if self._cuda is None:
            self._cuda = CudaTargets(fbo.ctx, fbo.color_attachments, device)
        self._cuda.copy(outs, viewport)

    def reset(self) -> None:
        """Drop the CUDA registrations (before the render targets change or go away)."""
        cuda, self._cuda = self._cuda, None
        if cuda is not None:
            cuda.release()


class TextureWriter:
    """Fills a texture from [H, W, C] uint8 tensors (C = the texture's components, H and W at most
    the texture's size) into its lower-left corner: CPU tensors with one glTexSubImage2D from the
    tensor's memory, CUDA tensors device to device through interop (the texture is registered once).
    Call `reset()` before the texture is released or replaced."""

    def __init__(self) -> None:
        self._cuda: CudaTargets | None = None
        self._texture: Any = None

    def write(self, texture: Any, image: torch.Tensor) -> None:  # image: [H, W, C] uint8, contiguous
        viewport = (0, 0, image.shape[1], image.shape[0])
        if image.device.type == "cpu":
            texture.write(memoryview(image.numpy()), viewport=viewport)
            return
        if self._texture is not texture:
            self.reset()
            self._cuda = CudaTargets(texture.ctx, [texture], image.device, write=True)
            self._texture = texture
        self._cuda.write([(0, image)], viewport)

    def reset(self) -> None:
        """Drop the CUDA registration (before the texture changes or goes away)."""
        cuda, self._cuda, self._texture = self._cuda, None, None
        if cuda is not None:
            cuda.release()
