"""CUDA driver plumbing shared by the kernel runtime, GL interop, EGL device
matching and doctor: error messages with likely causes, result checking, and
torch's primary context made current for driver API calls.

cuda-python's driver module is imported inside the functions, so importing this
module costs nothing on machines without CUDA.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

# Likely causes of CUDA driver / NVRTC errors in glrast's use of them, by error name.
CUDA_ERROR_HINTS: dict[str, str] = {
    "CUDA_ERROR_NOT_INITIALIZED": "the CUDA driver was not initialized (cuInit); CUDA was used before torch set it up",
    "CUDA_ERROR_DEINITIALIZED": "the CUDA driver is shutting down (interpreter exit?)",
    "CUDA_ERROR_NO_DEVICE": "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)",
    "CUDA_ERROR_INVALID_DEVICE": "wrong device: the GL context and the tensor are on different GPUs, or the CUDA "
    "ordinal does not exist",
    "CUDA_ERROR_INVALID_CONTEXT": "no CUDA context is current on this thread (torch's primary context was not made "
    "current), or it belongs to another device",
    "CUDA_ERROR_CONTEXT_IS_DESTROYED": "the CUDA context was destroyed (torch or the process is shutting down)",
    "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT": "the OpenGL context is not current on this thread, or it is not NVIDIA's "
    "GL on the tensor's GPU (wrong EGL device, Mesa, or WSL's GL); run `glrast doctor`",
    "CUDA_ERROR_OPERATING_SYSTEM": "the driver refused GL interop: GL and CUDA are not the same NVIDIA driver "
    "(Mesa GL, WSL, or a remote display)",
    "CUDA_ERROR_INVALID_HANDLE": "a stale handle: the GL texture was released or reallocated while registered, or a "
    "module is used after its context went away",
    "CUDA_ERROR_INVALID_VALUE": "invalid argument; in GL interop: a GL error may be pending, the texture format "
    "cannot be registered, or the copy reaches outside the texture",
    "CUDA_ERROR_ALREADY_MAPPED": "the render target is still mapped (an earlier copy failed half-way)",
    "CUDA_ERROR_NOT_MAPPED": "the render target is not mapped for CUDA",
    "CUDA_ERROR_NOT_MAPPED_AS_ARRAY": "the GL object is not a texture (a buffer cannot be read as an array)",
    "CUDA_ERROR_MAP_FAILED": "mapping the GL texture failed: a GL error may be pending or the GL context is lost",
    "CUDA_ERROR_UNKNOWN": "unknown driver error; in GL interop usually a GL context that is not current or "
    "belongs to another GPU",
    "CUDA_ERROR_OUT_OF_MEMORY": "the GPU is out of memory",
    "CUDA_ERROR_NO_BINARY_FOR_GPU": "the cubin does not fit this GPU; NVRTC targeted another architecture",
    "CUDA_ERROR_INVALID_IMAGE": "the driver cannot load NVRTC's output: the driver is older than NVRTC; update the "
    "driver or install an nvidia-cuda-nvrtc matching its CUDA version",
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION": "the driver is older than NVRTC and cannot JIT its PTX; update the driver "
    "or install an nvidia-cuda-nvrtc matching the driver's CUDA version",
    "CUDA_ERROR_INVALID_PTX": "the driver could not JIT the PTX (driver older than NVRTC?)",
    "CUDA_ERROR_NOT_FOUND": "the kernel name is not in the module (csrc/ and the Python launch disagree)",
    "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES": "too many registers or threads for this GPU at this block size",
    "CUDA_ERROR_ILLEGAL_ADDRESS": "a kernel read or wrote outside its tensors (a glrast bug: please report it); the "
    "CUDA context is now unusable, restart the process",
    "CUDA_ERROR_LAUNCH_FAILED": "a kernel crashed; the CUDA context is now unusable, restart the process",
    "NVRTC_ERROR_INVALID_OPTION": "this NVRTC does not accept an option (an architecture it does not know?)",
    "NVRTC_ERROR_COMPILATION": "the kernel source does not compile; see the log",
    "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE": "NVRTC's built-in headers are missing or broken; reinstall "
    "nvidia-cuda-nvrtc",
}


class CudaError(RuntimeError):
    """A CUDA driver, runtime or NVRTC call failed; the message says the likely cause."""


def cuda_error_message(err: object, what: str) -> str:
    """'<what> failed: <ERROR_NAME> (<code>): <likely cause>' for a cuda-python result code."""
    name = getattr(err, "name", None) or str(err)
    hint = CUDA_ERROR_HINTS.get(name, "see the CUDA documentation for this error")
    return f"{what} failed: {name} ({int(err)}): {hint}"


def check_cuda(result: tuple, what: str):
    """Unpack a cuda-python (err, *values) tuple; raises CudaError unless err is success."""
    err, *values = result
    if int(err) != 0:
        raise CudaError(cuda_error_message(err, what))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@functools.cache
def primary_context(index: int):
    """The primary CUDA context of device `index`: the one torch's runtime works in
    (retained once for the process's lifetime)."""
    from cuda.bindings import driver

    torch.cuda.init()
    check_cuda(driver.cuInit(0), "cuInit")
    dev = check_cuda(driver.cuDeviceGet(index), f"cuDeviceGet({index})")
    return check_cuda(driver.cuDevicePrimaryCtxRetain(dev), f"cuDevicePrimaryCtxRetain({index})")


@contextlib.contextmanager
def cuda_context(device: torch.device) -> Iterator[None]:
    """Make torch's (primary) context of `device` current for driver API calls.

    The runtime makes it current lazily, so a thread that has done no runtime call
    on this device (or has another context current) would otherwise get
    CUDA_ERROR_INVALID_CONTEXT. The caller's current context is restored after."""
    from cuda.bindings import driver

    ctx = primary_context(device.index if device.index is not None else torch.cuda.current_device())
    current = check_cuda(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if int(current) == int(ctx):
        yield
        return
    check_cuda(driver.cuCtxPushCurrent(ctx), "cuCtxPushCurrent")
    try:
        yield
    finally:
        check_cuda(driver.cuCtxPopCurrent(), "cuCtxPopCurrent")


def pci_bus_id(cuda_index: int) -> str | None:
    """PCI address of CUDA device `cuda_index` from the driver; None when unavailable."""
    try:
        from cuda.bindings import driver

        if int(driver.cuInit(0)[0]) != 0:
            return None
        err, dev = driver.cuDeviceGet(cuda_index)
        if int(err) != 0:
            return None
        err, bus_id = driver.cuDeviceGetPCIBusId(32, dev)
    except Exception:  # no driver library: the ordinal alone decides
        return None
    if int(err) != 0:
        return None
    text = bus_id.decode(errors="replace") if isinstance(bus_id, bytes) else str(bus_id)
    return text.split("\0")[0].strip() or None
