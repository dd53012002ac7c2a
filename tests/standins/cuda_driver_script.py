"""Drives glrast's CUDA path against the stand-in libcuda.so.1 (tests/standins/libcuda.cpp),
in a subprocess of tests/test_cuda_driver.py; prints what the test checks besides the call log."""

import ctypes
import types

import torch

# torch here has no CUDA: stand in for the few torch.cuda calls the path makes.
torch.cuda.init = lambda: None
torch.cuda.current_stream = lambda device=None: types.SimpleNamespace(cuda_stream=0x5555)
torch.cuda.get_device_capability = lambda device=None: (9, 0)
torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=2)

from cuda.bindings import driver  # noqa: E402

from glrast import cuda_driver, interop, kernels, pipeline  # noqa: E402
from glrast.interpolation import InterpolateParams  # noqa: E402
from glrast.params import KernelContractError, Params  # noqa: E402

fake = ctypes.CDLL("libcuda.so.1")
dev = torch.device("cuda", 1)

mod = kernels.CudaModule("interpolate", dev)  # loads, then checks the constants it exports
mod.launch("interpolate_fwd", InterpolateParams(attr=0x1234, rast=0x77), 1000)  # the first launch checks the layout
mod.launch("interpolate_fwd", InterpolateParams(attr=0x1234, rast=0x77), 0)  # nothing to do: no launch


class InterpolateParamsDrifted(Params):  # a mirror whose second field has the wrong name
    _fields_ = [("attr", ctypes.c_void_p), ("raster", ctypes.c_void_p)]


InterpolateParamsDrifted.__name__ = "InterpolateParams"
try:
    mod.launch("interpolate_fwd", InterpolateParamsDrifted(attr=1), 5)
except KernelContractError as e:
    print("layout error:", e)

torch.cuda.get_device_capability = lambda device=None: (99, 0)  # newer than NVRTC knows: PTX for the driver's JIT
ptx_mod = kernels.CudaModule("interpolate", dev)
print("target", ptx_mod.target, ptx_mod.arch)

gl = types.SimpleNamespace(error="GL_NO_ERROR")
targets = interop.CudaTargets(gl, [types.SimpleNamespace(glo=5), types.SimpleNamespace(glo=6)], dev)
out0, out1 = torch.empty(4, 3, 4), torch.empty(4, 3, 4)
targets.copy([(1, out1), (0, out0)], (2, 3, 3, 4))
print("ptrs", hex(out1.data_ptr()), hex(out0.data_ptr()))
fake.fake_fail(b"cuMemcpy2DAsync", 1, 0)
gl.error = "GL_INVALID_OPERATION"
try:
    targets.copy([(0, out0)], (0, 0, 3, 4))
except cuda_driver.CudaError as e:
    print("copy error:", e)
fake.fake_fail(b"cuGraphicsUnregisterResource", 4, 0)  # CUDA_ERROR_DEINITIALIZED: ignored at shutdown
targets.release()
targets.release()  # idempotent
image = torch.empty(4, 3, 4, dtype=torch.uint8)  # a viewer's RGBA image into a write-only registered texture
writer = interop.CudaTargets(gl, [types.SimpleNamespace(glo=7)], dev, write=True)
writer.write([(0, image)], (0, 0, 3, 4))
writer.release()
print("image", hex(image.data_ptr()))
fake.fake_fail(b"cuGraphicsGLRegisterImage", 219, 1)
try:
    interop.CudaTargets(gl, [types.SimpleNamespace(glo=9), types.SimpleNamespace(glo=8)], dev)
except cuda_driver.CudaError as e:
    print("register error:", e)

driver.cuCtxPushCurrent(cuda_driver.primary_context(1))  # already current: no push/pop around the launch
mod.launch("interpolate_fwd", InterpolateParams(attr=1, rast=2), 3)
driver.cuCtxPopCurrent()
print("pci", cuda_driver.pci_bus_id(1))

# The corner buffer: registered write-discard once per allocation, mapped on torch's stream around the
# raster_corners launch that writes into it, re-registered after it grows.
torch.cuda.get_device_capability = lambda device=None: (9, 0)


class FakeBuffer:  # a moderngl.Buffer's part that the corner buffer uses
    glo, size = 11, 48

    def orphan(self, size):
        fake.fake_note(f"orphan {size}".encode())
        self.size = size

    def release(self):
        fake.fake_note(b"buffer released")


corners = pipeline.CornerBuffer(types.SimpleNamespace(error="GL_NO_ERROR", buffer=lambda reserve: FakeBuffer()))
pos = types.SimpleNamespace(device=dev, ndim=3, shape=(2, 5, 4), data_ptr=lambda: 0x7000)
tri = types.SimpleNamespace(data_ptr=lambda: 0x8000)
corners.gather(pos, tri, None, 1, 4, 10)  # 480 bytes: grows, registers, maps, launches, unmaps
corners.gather(pos, tri, None, 1, 0, 0)  # nothing to draw: no map, no launch
corners.gather(pos, tri, None, 0, 0, 10)  # the same registration
corners.gather(pos, tri, None, 0, 0, 100)  # grows again: unregistered first, registered anew
fake.fake_fail(b"cuGraphicsResourceGetMappedPointer", 1, 0)
try:
    corners.gather(pos, tri, None, 0, 0, 10)
except cuda_driver.CudaError as e:
    print("pointer error:", e)
corners.release()
