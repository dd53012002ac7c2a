"""The CUDA production path: EGL device matching (fake device lists), error
translation, and on a GPU: interop copies equal glReadPixels, kernels launched
through the driver equal the host build, streams and threads behave."""

import logging
import os
import subprocess
import sys
import threading

import pytest
import torch

import glrast as dr
from glrast import egl, interop, kernels


def gpu_test(fn):
    """Marked `gpu`; skipped without CUDA."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.gpu(skip(fn))


SOFTWARE = ("EGL_MESA_device_software",)
NVIDIA = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")


def nv(index, ordinal, pci=None):
    return egl.EglDevice(index, NVIDIA, ordinal, f"/dev/dri/card{index}", pci)


def mesa(index):
    return egl.EglDevice(index, SOFTWARE, None, None, None)


# ---------------------------------------------------------------------------
# Device matching


def test_single_gpu_after_mesa_device():
    devices = [mesa(0), nv(1, 0)]
    assert egl.select_device(devices, 0) == 1  # not "device 0 by accident"


def test_cuda_visible_devices_subset():
    # Four GPUs, CUDA_VISIBLE_DEVICES=2,3: EGL lists all four, only the visible two
    # have CUDA ordinals, numbered as this process sees them.
    devices = [nv(0, None), nv(1, None), nv(2, 0), nv(3, 1), mesa(4)]
    assert egl.select_device(devices, 0) == 2
    assert egl.select_device(devices, 1) == 3


def test_permuted_order():
    # CUDA_VISIBLE_DEVICES=1,0 (or CUDA_DEVICE_ORDER=FASTEST_FIRST): the orders differ.
    devices = [nv(0, 1, "0000:01:00.0"), nv(1, 0, "0000:02:00.0")]
    assert egl.select_device(devices, 0, "0000:02:00.0") == 1
    assert egl.select_device(devices, 1, "0000:01:00.0") == 0


def test_pci_spellings_match():
    devices = [nv(0, 0, "0000:3b:00.0")]
    assert egl.select_device(devices, 0, "00000000:3B:00.0") == 0
    assert egl.normalize_pci("00000000:3B:00.0") == egl.normalize_pci("0000:3b:00.0") == (0, 0x3B, 0)
    assert egl.normalize_pci("garbage") is None and egl.normalize_pci(None) is None


def test_pci_wins_over_disagreeing_ordinal(caplog):
    devices = [nv(0, 0, "0000:01:00.0"), nv(1, 1, "0000:02:00.0")]
    with caplog.at_level(logging.WARNING, logger="glrast"):
        assert egl.select_device(devices, 0, "0000:02:00.0") == 1
    assert "matched by PCI address" in caplog.text


def test_ordinal_used_when_pci_unknown_on_egl_side():
    devices = [nv(0, 1), nv(1, 0)]  # containers often have no /dev/dri
    assert egl.select_device(devices, 0, "0000:02:00.0") == 1


def test_contradicting_pci_raises():
    devices = [nv(0, 0, "0000:01:00.0")]
    with pytest.raises(RuntimeError, match=r"reports CUDA ordinal 0 but sits at PCI 0000:01:00.0"):
        egl.select_device(devices, 0, "0000:09:00.0")


def test_no_nvidia_device_lists_what_was_found():
    with pytest.raises(RuntimeError) as info:
        egl.select_device([mesa(0)], 0)
    text = str(info.value)
    assert "no EGL device reports a CUDA ordinal" in text
    assert "EGL device 0: CUDA ordinal none, PCI unknown, software (Mesa llvmpipe)" in text
    assert "libEGL_nvidia.so.0" in text and "NVIDIA_DRIVER_CAPABILITIES" in text and "glrast doctor" in text


def test_missing_ordinal_raises():
    devices = [nv(0, 0), nv(1, 1)]
    with pytest.raises(RuntimeError, match=r"(?s)no EGL device reports CUDA ordinal 2.*EGL device 1: CUDA ordinal 1"):
        egl.select_device(devices, 2)
    with pytest.raises(RuntimeError, match="no EGL devices at all"):
        egl.select_device([], 0)


def test_ambiguous_match_raises():
    with pytest.raises(RuntimeError, match=r"several EGL devices claim it \(\[0, 1\]\)"):
        egl.select_device([nv(0, 0), nv(1, 0)], 0)


def test_glcontext_env_override_must_agree():
    devices = [mesa(0), nv(1, 0)]
    assert egl.select_device(devices, 0, env_index="1") == 1
    assert egl.select_device(devices, 0, env_index="") == 1
    with pytest.raises(RuntimeError, match=r"GLCONTEXT_DEVICE_INDEX=0 would make glcontext open EGL device 0.*unset"):
        egl.select_device(devices, 0, env_index="0")


def test_egl_device_for_cuda_wiring(monkeypatch):
    monkeypatch.setattr(egl, "query_devices", lambda: [mesa(0), nv(1, 1, "0000:01:00.0"), nv(2, 0, "0000:02:00.0")])
    monkeypatch.setattr(egl, "cuda_pci_bus_id", lambda index: {0: "0000:02:00.0", 1: "0000:01:00.0"}[index])
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    assert egl.egl_device_for_cuda(0) == 2
    assert egl.egl_device_for_cuda(1) == 1
    monkeypatch.setenv(egl.DEVICE_INDEX_ENV, "0")
    with pytest.raises(RuntimeError, match="GLCONTEXT_DEVICE_INDEX"):
        egl.egl_device_for_cuda(0)


def test_context_opens_the_matched_egl_device(monkeypatch):
    # A CUDA context is opened on the EGL device its CUDA ordinal maps to (here the only
    # device, standing in for an NVIDIA one), and says which in `info`.
    monkeypatch.setattr(egl, "query_devices", lambda: [nv(0, 3)])
    monkeypatch.setattr(egl, "cuda_pci_bus_id", lambda index: None)
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    with dr.RasterizeGLContext(device="cuda:3") as ctx:
        assert ctx.egl_device == 0
        assert ctx.info["egl_device"] == 0 and ctx.info["device"] == "cuda:3"
    monkeypatch.setattr(egl, "query_devices", lambda: [mesa(0)])
    with pytest.raises(RuntimeError, match="no EGL device for CUDA device 3"):
        dr.RasterizeGLContext(device="cuda:3")
    with dr.RasterizeGLContext(device="cpu") as ctx:
        assert ctx.info["egl_device"] is None


def test_egl_unavailable_is_reported(monkeypatch):
    def broken():
        raise egl.EglUnavailableError("cannot load libEGL.so.1")

    monkeypatch.setattr(egl, "query_devices", broken)
    with pytest.raises(RuntimeError, match="cannot enumerate EGL devices to find CUDA device 0: cannot load libEGL"):
        egl.egl_device_for_cuda(0)


def test_pci_bus_id_from_sysfs(tmp_path):
    pci = tmp_path / "devices" / "pci0000:00" / "0000:00:01.0" / "0000:01:00.0"
    pci.mkdir(parents=True)
    (tmp_path / "drm" / "card1").mkdir(parents=True)
    (tmp_path / "drm" / "card1" / "device").symlink_to(pci)
    platform_dev = tmp_path / "devices" / "platform" / "simple-framebuffer.0"
    platform_dev.mkdir(parents=True)
    (tmp_path / "drm" / "card0").mkdir()
    (tmp_path / "drm" / "card0" / "device").symlink_to(platform_dev)
    assert egl.pci_bus_id_of_drm("/dev/dri/card1", tmp_path / "drm") == "0000:01:00.0"
    assert egl.pci_bus_id_of_drm("/dev/dri/card0", tmp_path / "drm") is None
    assert egl.pci_bus_id_of_drm(None, tmp_path / "drm") is None


FAKE_LIBEGL = r"""
#include <string.h>
extern "C" {
typedef void* Dev;
static int devs[3];  // their addresses serve as device handles
static int last_error = 0x3000;
int eglGetError() { int e = last_error; last_error = 0x3000; return e; }
const char* eglQueryString(void* dpy, int name) {
    return dpy == 0 && name == 0x3055 ? "EGL_EXT_device_enumeration" : 0;
}
unsigned eglQueryDevicesEXT(int max, Dev* out, int* count) {
    if (out) for (int i = 0; i < max && i < 3; ++i) out[i] = &devs[i];
    *count = out ? (max < 3 ? max : 3) : 3;
    return 1;
}
const char* eglQueryDeviceStringEXT(Dev d, int name) {
    int i = (int*)d - devs;
    if (name == 0x3055) return i == 0 ? "EGL_MESA_device_software EGL_EXT_device_drm_render_node"
                                      : "EGL_NV_device_cuda EGL_EXT_device_drm";
    if (name == 0x3233 && i > 0) return i == 1 ? "/dev/dri/card-glrast-test1" : "/dev/dri/card-glrast-test2";
    last_error = 0x300C;  // EGL_BAD_PARAMETER
    return 0;
}
unsigned eglQueryDeviceAttribEXT(Dev d, int name, long* value) {
    int i = (int*)d - devs;
    if (name != 0x323A || i != 2) { last_error = 0x3004; return 0; }  // only device 2 is visible to CUDA
    *value = 0;
    return 1;
}
void* eglGetProcAddress(const char* name) {
    if (!strcmp(name, "eglQueryDevicesEXT")) return (void*)eglQueryDevicesEXT;
    if (!strcmp(name, "eglQueryDeviceStringEXT")) return (void*)eglQueryDeviceStringEXT;
    if (!strcmp(name, "eglQueryDeviceAttribEXT")) return (void*)eglQueryDeviceAttribEXT;
    return 0;
}
}
"""


def test_device_queries_against_a_stand_in_libegl(tmp_path, monkeypatch):
    """query_devices' ctypes calls (handles, strings, EGLAttrib out-values) against a fake libEGL
    with Mesa's software device and two NVIDIA devices, one hidden from CUDA."""
    (tmp_path / "egl.cpp").write_text(FAKE_LIBEGL)
    lib = tmp_path / "libEGL-fake.so"
    build = subprocess.run(
        [kernels.host_compiler()[0], "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "egl.cpp")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    monkeypatch.setenv(egl.LIBEGL_ENV, str(lib))
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    egl._egl.cache_clear()
    try:
        assert egl.client_extensions() == ["EGL_EXT_device_enumeration"]
        devices = egl.query_devices()
        monkeypatch.setattr(egl, "cuda_pci_bus_id", lambda index: None)
        chosen = egl.egl_device_for_cuda(0)
    finally:
        egl._egl.cache_clear()
    nvidia = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")
    assert devices == [
        egl.EglDevice(0, ("EGL_MESA_device_software", "EGL_EXT_device_drm_render_node"), None, None, None),
        egl.EglDevice(1, nvidia, None, "/dev/dri/card-glrast-test1", None),
        egl.EglDevice(2, nvidia, 0, "/dev/dri/card-glrast-test2", None),
    ]
    assert chosen == 2


def test_real_device_list():
    devices = egl.query_devices()
    assert [d.index for d in devices] == list(range(len(devices)))
    assert devices, "the test machines have at least Mesa's software device"
    assert "EGL_EXT_device_enumeration" in egl.client_extensions()


# ---------------------------------------------------------------------------
# Error translation

MODERNGL_ERRORS = {
    "GL_INVALID_ENUM",
    "GL_INVALID_VALUE",
    "GL_INVALID_OPERATION",
    "GL_INVALID_FRAMEBUFFER_OPERATION",
    "GL_OUT_OF_MEMORY",
    "GL_STACK_UNDERFLOW",
    "GL_STACK_OVERFLOW",
    "GL_CONTEXT_LOST",
    "GL_UNKNOWN_ERROR",
}


def test_hint_tables_name_real_codes():
    from cuda.bindings import driver, nvrtc

    real = {e.name for e in driver.CUresult} | {e.name for e in nvrtc.nvrtcResult}
    assert set(kernels.CUDA_ERROR_HINTS) <= real, set(kernels.CUDA_ERROR_HINTS) - real
    assert set(interop.GL_ERROR_HINTS) <= MODERNGL_ERRORS


@pytest.mark.parametrize(
    "name,phrase",
    [
        ("CUDA_ERROR_INVALID_DEVICE", "wrong device"),
        ("CUDA_ERROR_INVALID_CONTEXT", "no CUDA context is current on this thread"),
        ("CUDA_ERROR_INVALID_GRAPHICS_CONTEXT", "OpenGL context is not current on this thread"),
        ("CUDA_ERROR_OPERATING_SYSTEM", "not the same NVIDIA driver"),
        ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "driver is older than NVRTC"),
        ("CUDA_ERROR_ILLEGAL_ADDRESS", "restart the process"),
        ("NVRTC_ERROR_COMPILATION", "see the log"),
    ],
)
def test_cuda_error_message(name, phrase):
    from cuda.bindings import driver, nvrtc

    code = getattr(driver.CUresult, name, None) or getattr(nvrtc.nvrtcResult, name)
    message = kernels.cuda_error_message(code, "registering the render target")
    assert message.startswith(f"registering the render target failed: {name} ({int(code)}): ")
    assert phrase in message


def test_unknown_cuda_error_keeps_its_name():
    from cuda.bindings import driver

    message = kernels.cuda_error_message(driver.CUresult.CUDA_ERROR_TIMEOUT, "waiting")
    assert "CUDA_ERROR_TIMEOUT" in message and "see the CUDA documentation" in message


def test_check_cuda():
    from cuda.bindings import driver

    ok, bad = driver.CUresult.CUDA_SUCCESS, driver.CUresult.CUDA_ERROR_INVALID_CONTEXT
    assert kernels.check_cuda((ok,), "x") is None
    assert kernels.check_cuda((ok, 5), "x") == 5
    assert kernels.check_cuda((ok, 5, 6), "x") == [5, 6]
    with pytest.raises(kernels.CudaError, match="launch failed: CUDA_ERROR_INVALID_CONTEXT"):
        kernels.check_cuda((bad, None), "launch")


def test_interop_message_includes_pending_gl_error():
    from cuda.bindings import driver

    err = driver.CUresult.CUDA_ERROR_UNKNOWN
    plain = interop.interop_error_message(err, "mapping")
    assert plain == kernels.cuda_error_message(err, "mapping")
    with_gl = interop.interop_error_message(err, "mapping", "GL_INVALID_OPERATION")
    assert with_gl.startswith(plain)
    assert "A GL error was pending: GL_INVALID_OPERATION: " in with_gl and "not current" in with_gl
    assert interop.gl_error_message("GL_NO_ERROR") == ""
    assert interop.gl_error_message("GL_STACK_OVERFLOW") == "GL_STACK_OVERFLOW: unexpected GL error"


def test_cpu_reader_reads_the_id_target(cpu_glctx):
    pos = torch.tensor([[[-1, -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (5, 7))
    with cpu_glctx.activate():
        pipe = cpu_glctx.pipeline()
        ids = torch.empty(5, 7, dtype=torch.int32)
        pipe.reader.read(pipe.fbo, [(0, ids)], (0, 0, 7, 5))
        pipe.reader.reset()  # no CUDA registrations: nothing to do
    assert torch.equal(ids.long(), dr.triangle_index(rast)[0] + 1)
    assert (ids == 1).all()


# ---------------------------------------------------------------------------
# On a GPU


def _scene(n: int, device: str):
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(n, 12, 4, generator=g) * 1.6 - 0.8
    pos[..., 2] = torch.rand(n, 12, generator=g) * 0.5
    pos[..., 3] = 1.0
    tri = torch.randint(0, 12, (10, 3), generator=g, dtype=torch.int32)
    return pos.to(device), tri.to(device)


def _gl_readback(glctx, height, width):
    """What glReadPixels gives for the last image drawn: the id target."""
    with glctx.activate():
        pipe = glctx.pipeline()
        ids = torch.empty(height, width, dtype=torch.int32)
        pipe.fbo.read_into(ids.numpy(), viewport=(0, 0, width, height), components=1, attachment=0, dtype="u4")
    return ids


@gpu_test
def test_interop_copy_equals_readpixels():
    with dr.RasterizeGLContext(device="cuda") as glctx:
        pos, tri = _scene(3, "cuda")
        for height, width in [(16, 16), (24, 40), (8, 8)]:  # the second grows (re-registers), the third reuses
            rast, _ = dr.rasterize(glctx, pos, tri, (height, width))
            torch.cuda.synchronize()
            ref = _gl_readback(glctx, height, width)
            assert torch.equal(dr.triangle_index(rast[-1]).cpu() + 1, ref.long())
            with glctx.activate():
                pipe = glctx.pipeline()
                ids = torch.empty(height, width, dtype=torch.int32, device="cuda")
                pipe.reader.read(pipe.fbo, [(0, ids)], (0, 0, width, height))
            torch.cuda.synchronize()
            assert torch.equal(ids.cpu(), ref)
            assert (rast[..., 3] > 0).any()


@gpu_test
def test_rasterize_cuda_matches_cpu(cpu_glctx):
    pos, tri = _scene(2, "cpu")
    with dr.RasterizeGLContext(device="cuda") as gctx:
        rast_gpu, db_gpu = dr.rasterize(gctx, pos.cuda(), tri.cuda(), (32, 48))
    rast_cpu, db_cpu = dr.rasterize(cpu_glctx, pos, tri, (32, 48))
    same = rast_gpu[..., 3].cpu() == rast_cpu[..., 3]
    assert same.float().mean() > 0.99  # coverage ties on shared edges may differ between GL drivers
    assert torch.allclose(rast_gpu.cpu()[same], rast_cpu[same], atol=1e-4)
    assert torch.allclose(db_gpu.cpu()[same], db_cpu[same], atol=1e-3)


def _raster_grad(pos, tri, rast, grad_rast, grad_db):
    from glrast.raster import _params

    mod = kernels.module("raster", pos.device)
    slots, accumulator = kernels.accumulator(mod, pos)
    params = _params(pos, tri, rast, grad_rast=grad_rast, grad_db=grad_db)
    params.grad_pos = accumulator
    mod.launch("raster_grad", params, rast[..., 0].numel())
    return kernels.collect(slots)


@gpu_test
def test_kernels_cuda_match_host(cpu_glctx):
    pos, tri = _scene(2, "cpu")
    rast, rast_db = dr.rasterize(cpu_glctx, pos, tri, (32, 48))
    g = torch.Generator().manual_seed(5)
    attr = torch.rand(2, 12, 3, generator=g)
    grad_rast, grad_db = torch.randn(rast.shape, generator=g), torch.randn(rast_db.shape, generator=g)
    ref = _raster_grad(pos, tri, rast, grad_rast, grad_db)
    got = _raster_grad(*(t.cuda() for t in (pos, tri, rast, grad_rast, grad_db)))
    assert torch.allclose(got.cpu(), ref, atol=1e-4, rtol=1e-4)

    results = {}
    for device in ("cpu", "cuda"):
        a = attr.to(device).requires_grad_()
        r = rast.to(device).requires_grad_()
        db = rast_db.to(device).requires_grad_()
        out, out_da = dr.interpolate(a, r, tri.to(device), rast_db=db, diff_attrs="all")
        v, vd = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)), torch.ones(out_da.shape)
        loss = (out * v.to(device)).sum() + (out_da * vd.to(device)).sum()
        results[device] = [t.detach().cpu() for t in (out, out_da, *torch.autograd.grad(loss, (a, r, db)))]
    for got_t, ref_t in zip(results["cuda"], results["cpu"]):
        assert torch.allclose(got_t, ref_t, atol=1e-4, rtol=1e-4)


@gpu_test
def test_launch_on_side_stream_and_other_thread(cpu_glctx):
    pos, tri = _scene(1, "cpu")
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (16, 16))
    attr = torch.rand(1, 12, 2)
    ref, _ = dr.interpolate(attr, rast, tri)
    args = (attr.cuda(), rast.cuda(), tri.cuda())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, _ = dr.interpolate(*args)
    stream.synchronize()
    assert torch.allclose(out.cpu(), ref, atol=1e-6)

    result = {}

    def worker():  # a fresh thread: torch's context is not current on it yet
        try:
            result["out"] = dr.interpolate(*args)[0].cpu()
        except BaseException as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert "error" not in result, result.get("error")
    assert torch.allclose(result["out"], ref, atol=1e-6)


@gpu_test
def test_cuda_module_target_and_context():
    mod = kernels.module("interpolate", torch.device("cuda", 0))
    major, minor = torch.cuda.get_device_capability(0)
    assert (mod.target, mod.arch) == kernels.select_target(major * 10 + minor, kernels.nvrtc_supported_archs())
    from cuda.bindings import driver

    with kernels.cuda_context(torch.device("cuda", 0)):
        current = kernels.check_cuda(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    assert int(current) == int(kernels.primary_context(0))


# ---------------------------------------------------------------------------
# The driver calls themselves, against a stand-in libcuda.so.1 (no GPU needed):
# argument marshalling through cuda-bindings, the context each call runs in,
# the order of map / copy / unmap, and the error paths.

FAKE_LIBCUDA = r"""
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
typedef int CUresult;
typedef unsigned long long u64;
struct Memcpy2D {  // CUDA_MEMCPY2D
    size_t srcXInBytes, srcY; int srcMemoryType; const void* srcHost; u64 srcDevice; void* srcArray; size_t srcPitch;
    size_t dstXInBytes, dstY; int dstMemoryType; void* dstHost; u64 dstDevice; void* dstArray; size_t dstPitch;
    size_t WidthInBytes, Height;
};
static __thread u64 stack[16];
static __thread int depth;
static char fail_name[64];
static CUresult fail_code;
static int fail_skip;
static FILE* out() {
    static FILE* f;
    if (!f) { f = fopen(getenv("FAKE_CUDA_LOG"), "w"); setvbuf(f, NULL, _IOLBF, 0); }
    return f;
}
static CUresult call(const char* name, const char* fmt, ...) {
    fprintf(out(), "%s ctx=%#llx", name, depth ? stack[depth - 1] : 0ULL);
    va_list ap; va_start(ap, fmt); vfprintf(out(), fmt, ap); va_end(ap);
    fputc('\n', out());
    if (strcmp(name, fail_name) == 0 && fail_skip-- == 0) { fail_name[0] = 0; return fail_code; }
    return 0;
}
// The call `name` after `skip` successful ones returns `code`.
void fake_fail(const char* name, int code, int skip) {
    strncpy(fail_name, name, 63);
    fail_code = code;
    fail_skip = skip;
}
CUresult cuDriverGetVersion(int* v) { *v = 13000; return 0; }
CUresult cuGetProcAddress_v2(const char* sym, void** pfn, int, u64, int* status) {
    *pfn = dlsym(RTLD_DEFAULT, sym);
    if (status) *status = *pfn ? 0 : 1;
    return *pfn ? 0 : 500;
}
CUresult cuGetProcAddress(const char* sym, void** pfn, int v, u64 f) {
    return cuGetProcAddress_v2(sym, pfn, v, f, NULL);
}
CUresult cuInit(unsigned) { return call("cuInit", ""); }
CUresult cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return call("cuDeviceGet", " %d", ordinal); }
CUresult cuDeviceGetPCIBusId(char* s, int len, int dev) { snprintf(s, len, "0000:%02X:00.0", 10 + dev); return 0; }
CUresult cuDevicePrimaryCtxRetain(u64* ctx, int dev) {
    *ctx = 0x1000 + dev;
    return call("cuDevicePrimaryCtxRetain", " %d", dev);
}
CUresult cuCtxGetCurrent(u64* ctx) { *ctx = depth ? stack[depth - 1] : 0; return 0; }
CUresult cuCtxPushCurrent(u64 ctx) { stack[depth++] = ctx; return call("cuCtxPushCurrent", " %#llx", ctx); }
CUresult cuCtxPopCurrent(u64* ctx) { CUresult r = call("cuCtxPopCurrent", ""); *ctx = stack[--depth]; return r; }
CUresult cuModuleLoadData(u64* mod, const void* image) {
    *mod = 0x4000;
    int elf = memcmp(image, "\x7f" "ELF", 4) == 0;  // a cubin; else NUL-terminated PTX text
    int entry = !elf && strstr((const char*)image, ".entry interpolate_fwd") != NULL;
    return call("cuModuleLoadData", " elf=%d ptx_entry=%d", elf, entry);
}
CUresult cuModuleGetFunction(u64* fn, u64 mod, const char* name) {
    *fn = 0x5000;
    return call("cuModuleGetFunction", " %#llx %s", mod, name);
}
CUresult cuLaunchKernel(u64 fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, u64 stream, void** params, void** extra) {
    const u64* p = (const u64*)params[0];
    return call("cuLaunchKernel", " %#llx grid=%u,%u,%u block=%u,%u,%u shared=%u stream=%#llx p=%#llx,%lld n=%lld%s",
                fn, gx, gy, gz, bx, by, bz, shared, stream, p[0], (long long)p[1], *(const long long*)params[1],
                extra ? " extra" : "");
}
CUresult cuGraphicsGLRegisterImage(u64* res, unsigned image, unsigned target, unsigned flags) {
    *res = 0x2000 + image;
    return call("cuGraphicsGLRegisterImage", " %u %#x %u", image, target, flags);
}
CUresult cuGraphicsMapResources(unsigned count, const u64* res, u64 stream) {
    return call("cuGraphicsMapResources", " %u %#llx %#llx stream=%#llx", count, res[0], count > 1 ? res[1] : 0,
                stream);
}
CUresult cuGraphicsUnmapResources(unsigned count, const u64* res, u64 stream) {
    return call("cuGraphicsUnmapResources", " %u %#llx %#llx stream=%#llx", count, res[0], count > 1 ? res[1] : 0,
                stream);
}
CUresult cuGraphicsSubResourceGetMappedArray(u64* arr, u64 res, unsigned index, unsigned level) {
    *arr = res + 0x1000;
    return call("cuGraphicsSubResourceGetMappedArray", " %#llx %u %u", res, index, level);
}
CUresult cuMemcpy2DAsync(const Memcpy2D* c, u64 stream) {  // 3 = CU_MEMORYTYPE_ARRAY, 2 = device memory
    u64 src = c->srcMemoryType == 3 ? (u64)c->srcArray : c->srcDevice;
    u64 dst = c->dstMemoryType == 3 ? (u64)c->dstArray : c->dstDevice;
    return call("cuMemcpy2DAsync", " src=%d,%#llx,x=%zu,y=%zu,pitch=%zu dst=%d,%#llx,x=%zu,y=%zu,pitch=%zu"
                " size=%zux%zu stream=%#llx", c->srcMemoryType, src, c->srcXInBytes, c->srcY, c->srcPitch,
                c->dstMemoryType, dst, c->dstXInBytes, c->dstY, c->dstPitch, c->WidthInBytes, c->Height, stream);
}
CUresult cuGraphicsUnregisterResource(u64 res) { return call("cuGraphicsUnregisterResource", " %#llx", res); }
}
"""

DRIVER_SCRIPT = r"""
import ctypes, sys, types
import torch
# torch here has no CUDA: stand in for the few torch.cuda calls the path makes.
torch.cuda.init = lambda: None
torch.cuda.current_stream = lambda device=None: types.SimpleNamespace(cuda_stream=0x5555)
torch.cuda.get_device_capability = lambda device=None: (9, 0)
torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=2)
from glrast import egl, interop, kernels
fake = ctypes.CDLL("libcuda.so.1")
dev = torch.device("cuda", 1)

class P(ctypes.Structure):
    _fields_ = [("a", ctypes.c_void_p), ("b", ctypes.c_longlong)]

mod = kernels.CudaModule("interpolate", dev)
mod.launch("interpolate_fwd", P(0x1234, -7), 1000)
mod.launch("interpolate_fwd", P(0x1234, -7), 0)  # nothing to do: no launch
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
except kernels.CudaError as e:
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
except kernels.CudaError as e:
    print("register error:", e)
from cuda.bindings import driver
driver.cuCtxPushCurrent(kernels.primary_context(1))  # already current: no push/pop around the launch
mod.launch("interpolate_fwd", P(1, 2), 3)
print("pci", egl.cuda_pci_bus_id(1))
"""


def test_driver_calls_against_a_stand_in_libcuda(tmp_path, monkeypatch):
    lib_dir, cache = tmp_path / "lib", tmp_path / "cache"
    lib_dir.mkdir()
    (lib_dir / "fake.cpp").write_text(FAKE_LIBCUDA)
    build = subprocess.run(
        [
            kernels.host_compiler()[0],
            "-shared",
            "-fPIC",
            "-o",
            str(lib_dir / "libcuda.so.1"),
            str(lib_dir / "fake.cpp"),
            "-ldl",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    # NVRTC must not run next to the stand-in driver (it talks to libcuda): build the cubin here first.
    monkeypatch.setenv("GLRAST_CACHE_DIR", str(cache))
    kernels.build_nvrtc("interpolate", 90)
    ptx_target = kernels.select_target(990, kernels.nvrtc_supported_archs())
    kernels.build_nvrtc("interpolate", ptx_target[1], "ptx")
    env = {
        **os.environ,
        "FAKE_CUDA_LOG": str(tmp_path / "log"),
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib_dir), os.environ.get("LD_LIBRARY_PATH")])),
    }
    res = subprocess.run([sys.executable, "-c", DRIVER_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    ptr1, ptr0 = out.split("ptrs ")[1].split()[:2]
    image = out.split("image ")[1].split()[0]
    log = (tmp_path / "log").read_text().splitlines()
    ctx = "ctx=0x1001"
    mapped = [
        f"cuGraphicsSubResourceGetMappedArray {ctx} 0x2006 0 0",
        f"cuMemcpy2DAsync {ctx} src=3,0x3006,x=32,y=3,pitch=0 dst=2,{ptr1},x=0,y=0,pitch=48 size=48x4 stream=0x5555",
        f"cuGraphicsSubResourceGetMappedArray {ctx} 0x2005 0 0",
        f"cuMemcpy2DAsync {ctx} src=3,0x3005,x=32,y=3,pitch=0 dst=2,{ptr0},x=0,y=0,pitch=48 size=48x4 stream=0x5555",
    ]
    assert log == [
        "cuInit ctx=0",
        "cuDeviceGet ctx=0 1",
        "cuDevicePrimaryCtxRetain ctx=0 1",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuModuleLoadData {ctx} elf=1 ptx_entry=0",  # the sm_90 cubin
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuModuleGetFunction {ctx} 0x4000 interpolate_fwd",
        # grid: ceil(1000 / 256) blocks; the struct and n arrive by value
        f"cuLaunchKernel {ctx} 0x5000 grid=4,1,1 block=256,1,1 shared=0 stream=0x5555 p=0x1234,-7 n=1000",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuModuleLoadData {ctx} elf=0 ptx_entry=1",  # sm_990: PTX of NVRTC's newest architecture
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsGLRegisterImage {ctx} 5 0xde1 1",  # GL_TEXTURE_2D, read-only
        f"cuGraphicsGLRegisterImage {ctx} 6 0xde1 1",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsMapResources {ctx} 2 0x2006 0x2005 stream=0x5555",  # one map for both targets
        *mapped,
        f"cuGraphicsUnmapResources {ctx} 2 0x2006 0x2005 stream=0x5555",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsMapResources {ctx} 1 0x2005 0 stream=0x5555",
        f"cuGraphicsSubResourceGetMappedArray {ctx} 0x2005 0 0",
        f"cuMemcpy2DAsync {ctx} src=3,0x3005,x=0,y=0,pitch=0 dst=2,{ptr0},x=0,y=0,pitch=48 size=48x4 stream=0x5555",
        f"cuGraphicsUnmapResources {ctx} 1 0x2005 0 stream=0x5555",  # unmapped although the copy failed
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsUnregisterResource {ctx} 0x2005",
        f"cuGraphicsUnregisterResource {ctx} 0x2006",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsGLRegisterImage {ctx} 7 0xde1 2",  # write-discard
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsMapResources {ctx} 1 0x2007 0 stream=0x5555",
        f"cuGraphicsSubResourceGetMappedArray {ctx} 0x2007 0 0",
        # device memory (pitch 3 texels x 4 bytes) into the mapped array's lower-left corner
        f"cuMemcpy2DAsync {ctx} src=2,{image},x=0,y=0,pitch=12 dst=3,0x3007,x=0,y=0,pitch=0 size=12x4 stream=0x5555",
        f"cuGraphicsUnmapResources {ctx} 1 0x2007 0 stream=0x5555",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsUnregisterResource {ctx} 0x2007",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsGLRegisterImage {ctx} 9 0xde1 1",
        f"cuGraphicsGLRegisterImage {ctx} 8 0xde1 1",  # fails: the first is unregistered again
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuGraphicsUnregisterResource {ctx} 0x2009",
        f"cuCtxPopCurrent {ctx}",
        f"cuCtxPushCurrent {ctx} 0x1001",
        f"cuLaunchKernel {ctx} 0x5000 grid=1,1,1 block=256,1,1 shared=0 stream=0x5555 p=0x1,2 n=3",
        "cuInit ctx=0x1001",
        "cuDeviceGet ctx=0x1001 1",
    ]
    assert "copy error: CUDA-GL interop on cuda:1 (copy) failed: CUDA_ERROR_INVALID_VALUE (1)" in out
    assert "A GL error was pending: GL_INVALID_OPERATION" in out
    assert "register error: CUDA-GL interop on cuda:1 (registering) failed: CUDA_ERROR_INVALID_GRAPHICS_CONTEXT" in out
    assert "pci 0000:0B:00.0" in out
    assert f"target ptx {ptx_target[1]}" in out and ptx_target[0] == "ptx"
