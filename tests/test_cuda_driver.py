"""CUDA driver plumbing: error messages with likely causes, result checking, and
the driver calls of the kernel runtime and GL interop, against a stand-in
libcuda.so.1 (no GPU needed) and, on a GPU, for real: kernels launched through
the driver equal the host build, on side streams and fresh threads."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import gpu_test

import glrast as dr
from glrast import cuda_driver, interop, kernels

STANDINS = Path(__file__).resolve().parent / "standins"

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
    assert set(cuda_driver.CUDA_ERROR_HINTS) <= real, set(cuda_driver.CUDA_ERROR_HINTS) - real
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
    message = cuda_driver.cuda_error_message(code, "registering the render target")
    assert message.startswith(f"registering the render target failed: {name} ({int(code)}): ")
    assert phrase in message


def test_unknown_cuda_error_keeps_its_name():
    from cuda.bindings import driver

    message = cuda_driver.cuda_error_message(driver.CUresult.CUDA_ERROR_TIMEOUT, "waiting")
    assert "CUDA_ERROR_TIMEOUT" in message and "see the CUDA documentation" in message


def test_check_cuda():
    from cuda.bindings import driver

    ok, bad = driver.CUresult.CUDA_SUCCESS, driver.CUresult.CUDA_ERROR_INVALID_CONTEXT
    assert cuda_driver.check_cuda((ok,), "x") is None
    assert cuda_driver.check_cuda((ok, 5), "x") == 5
    assert cuda_driver.check_cuda((ok, 5, 6), "x") == [5, 6]
    with pytest.raises(cuda_driver.CudaError, match="launch failed: CUDA_ERROR_INVALID_CONTEXT"):
        cuda_driver.check_cuda((bad, None), "launch")


def _scene(n: int, device: str):
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(n, 12, 4, generator=g) * 1.6 - 0.8
    pos[..., 2] = torch.rand(n, 12, generator=g) * 0.5
    pos[..., 3] = 1.0
    tri = torch.randint(0, 12, (10, 3), generator=g, dtype=torch.int32)
    return pos.to(device), tri.to(device)


def _raster_grad(pos, tri, rast, grad_rast, grad_db):
    from glrast.raster import _params

    mod = kernels.module("raster", pos.device)
    slots, accumulator = kernels.accumulator(mod, pos.shape, pos.device)
    params = _params(pos, tri, rast, grad_rast=grad_rast.data_ptr(), grad_db=grad_db.data_ptr())
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

    with cuda_driver.cuda_context(torch.device("cuda", 0)):
        current = cuda_driver.check_cuda(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    assert int(current) == int(cuda_driver.primary_context(0))


# ---------------------------------------------------------------------------
# The driver calls themselves, against the stand-in libcuda.so.1.


def _stand_in_run(tmp_path, monkeypatch) -> tuple[str, list[tuple[str, str, str]]]:
    """Build the stand-in libcuda, run the driver script against it; returns the script's
    stdout and the call log as (call, current context, arguments)."""
    lib_dir, cache = tmp_path / "lib", tmp_path / "cache"
    lib_dir.mkdir()
    cmd = [kernels.host_compiler()[0], "-shared", "-fPIC", "-o", str(lib_dir / "libcuda.so.1")]
    build = subprocess.run([*cmd, str(STANDINS / "libcuda.cpp"), "-ldl"], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    # NVRTC must not run next to the stand-in driver (it talks to libcuda): build the cubin here first,
    # and the host build whose exports stand in for the module's globals.
    monkeypatch.setenv("GLRAST_CACHE_DIR", str(cache))
    kernels.build_nvrtc("interpolate", 90)
    kernels.build_nvrtc("raster", 90)
    ptx_target = kernels.select_target(990, kernels.nvrtc_supported_archs())
    kernels.build_nvrtc("interpolate", ptx_target[1], "ptx")
    env = {
        **os.environ,
        "FAKE_CUDA_LOG": str(tmp_path / "log"),
        "FAKE_CUDA_GLOBALS": f"{kernels.build_host('interpolate')}:{kernels.build_host('raster')}",
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib_dir), os.environ.get("LD_LIBRARY_PATH")])),
    }
    script = str(STANDINS / "cuda_driver_script.py")
    res = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    log = []
    for line in (tmp_path / "log").read_text().splitlines():
        call, ctx, *rest = line.split(" ", 2)
        log.append((call, ctx.removeprefix("ctx="), rest[0] if rest else ""))
    assert f"target ptx {ptx_target[1]}" in res.stdout and ptx_target[0] == "ptx"
    return res.stdout, log


def test_driver_calls_against_a_stand_in_libcuda(tmp_path, monkeypatch):
    out, log = _stand_in_run(tmp_path, monkeypatch)
    primary = "0x1001"  # the stand-in's primary context of device 1
    calls = [call for call, _, _ in log]
    args = {call: [a for c, _, a in log if c == call] for call in calls}

    # Every push is popped, and every call after the set-up runs in torch's primary context.
    depth = 0
    for call, ctx, _ in log:
        if call in ("cuInit", "cuDeviceGet", "cuDevicePrimaryCtxRetain", "note"):  # notes: the script's GL steps
            continue
        assert ctx == primary, f"{call} ran in context {ctx}"
        depth += {"cuCtxPushCurrent": 1, "cuCtxPopCurrent": -1}.get(call, 0)
        assert depth >= 0
    assert depth == 0

    # Modules: the sm_90 cubin, then PTX for an architecture newer than NVRTC's; the mirrors'
    # layouts and constants are read back from the module's globals and agree.
    assert args["cuModuleLoadData"] == ["elf=1 ptx_entry=0", "elf=0 ptx_entry=1", "elf=1 ptx_entry=0"]
    read = {a.split()[1] for a in args["cuModuleGetGlobal"]}
    assert {"glrast_fields_InterpolateParams", "glrast_layout_InterpolateParams", "glrast_layout_CornerParams"} <= read
    assert {"glrast_constant_names_triangle_ids", "glrast_fields_Accumulator"} <= read
    assert "layout error: InterpolateParams field 1: csrc/interpolate.cu has 'rast' where the Python mirror" in out
    # Launches: grid ceil(1000 / 256) on torch's stream, the struct and n by value; n = 0 launches nothing;
    # the launch with the context already current needs no push.
    assert args["cuLaunchKernel"][:2] == [
        "0x5000 grid=4,1,1 block=256,1,1 shared=0 stream=0x5555 p=0x1234,119,0,0 n=1000",
        "0x5000 grid=1,1,1 block=256,1,1 shared=0 stream=0x5555 p=0x1,2,0,0 n=3",
    ]
    last_launch = [i for i, (call, _, a) in enumerate(log) if call == "cuLaunchKernel" and "p=0x1,2," in a][0]
    assert calls[last_launch - 2 : last_launch + 2] == [  # the script's own push and pop, none of glrast's
        "cuCtxPopCurrent", "cuCtxPushCurrent", "cuLaunchKernel", "cuCtxPopCurrent"
    ]  # fmt: skip

    # Interop: registration of GL_TEXTURE_2D, read-only for render targets, write-discard for the
    # viewer's texture (7); every map is followed by its copies and an unmap of the same resources
    # on the same stream (also when a copy failed).
    flags = {a.split()[0]: a.split()[1:] for a in args["cuGraphicsGLRegisterImage"]}
    assert flags == {"5": ["0xde1", "1"], "6": ["0xde1", "1"], "7": ["0xde1", "2"], "9": ["0xde1", "1"],
                     "8": ["0xde1", "1"]}  # fmt: skip
    mapped = None
    for call, _, a in log:
        if call == "cuGraphicsMapResources":
            assert mapped is None
            mapped = a
        elif call == "cuGraphicsUnmapResources":
            assert a == mapped
            mapped = None
        elif call in ("cuGraphicsSubResourceGetMappedArray", "cuMemcpy2DAsync", "cuGraphicsResourceGetMappedPointer"):
            assert mapped is not None, f"{call} outside a map/unmap"
    assert mapped is None and all(a.endswith("stream=0x5555") for a in args["cuGraphicsMapResources"])
    ptr1, ptr0 = out.split("ptrs ")[1].split()[:2]
    assert args["cuMemcpy2DAsync"][:2] == [  # two targets in one map: viewport (2, 3, 3, 4), 16-byte texels
        f"src=3,0x3006,x=32,y=3,pitch=0 dst=2,{ptr1},x=0,y=0,pitch=48 size=48x4 stream=0x5555",
        f"src=3,0x3005,x=32,y=3,pitch=0 dst=2,{ptr0},x=0,y=0,pitch=48 size=48x4 stream=0x5555",
    ]
    # The write direction: device memory (pitch 3 texels x 4 bytes) into the mapped array's corner.
    image = out.split("image ")[1].split()[0]
    assert args["cuMemcpy2DAsync"][-1] == (
        f"src=2,{image},x=0,y=0,pitch=12 dst=3,0x3007,x=0,y=0,pitch=0 size=12x4 stream=0x5555"
    )
    assert "copy error: CUDA-GL interop on cuda:1 (copy) failed: CUDA_ERROR_INVALID_VALUE (1)" in out
    assert "A GL error was pending: GL_INVALID_OPERATION" in out
    # A failed registration leaves nothing registered; an unregister failing at shutdown is ignored.
    assert "register error: CUDA-GL interop on cuda:1 (registering) failed: CUDA_ERROR_INVALID_GRAPHICS_CONTEXT" in out
    registered = {a.split()[0] for a in args["cuGraphicsGLRegisterImage"]}
    unregistered = {a for a in args["cuGraphicsUnregisterResource"]}
    assert unregistered == {hex(0x2000 + int(glo)) for glo in registered - {"8"}} | {"0x600b"}

    # The corner buffer (GL buffer 11): registered write-discard, then per gather one map, the mapped
    # pointer, the raster_corners launch writing there (3 corners a triangle, pos and tri first in its
    # params) and the unmap, all on torch's stream; unregistered before its storage is reallocated.
    mapped_ptr = hex(0x600B << 20)
    start = calls.index("note")
    skip = ("cuCtxPushCurrent", "cuCtxPopCurrent", "cuModuleGetGlobal", "cuMemcpyDtoH", "cuModuleGetFunction")
    corner_log = [(call, a) for call, _, a in log[start:] if call not in skip]
    gather = [
        ("cuGraphicsMapResources", "1 0x600b 0 stream=0x5555"),
        ("cuGraphicsResourceGetMappedPointer", "0x600b"),
    ]
    launch = "0x5000 grid={},1,1 block=256,1,1 shared=0 stream=0x5555 p=0x7000,32768,0,{} n={}"
    unmap = [("cuGraphicsUnmapResources", "1 0x600b 0 stream=0x5555")]
    assert corner_log[: len(corner_log) - 3] == [
        ("note", "orphan 480"),
        ("cuGraphicsGLRegisterBuffer", "11 2"),
        *gather, ("cuModuleLoadData", "elf=1 ptx_entry=0"),  # the raster module, on first use
        ("cuLaunchKernel", launch.format(1, mapped_ptr, 30)), *unmap,
        *gather, ("cuLaunchKernel", launch.format(1, mapped_ptr, 30)), *unmap,
        ("cuGraphicsUnregisterResource", "0x600b"), ("note", "orphan 4800"), ("cuGraphicsGLRegisterBuffer", "11 2"),
        *gather, ("cuLaunchKernel", launch.format(2, mapped_ptr, 300)), *unmap,
        *gather,  # fails: unmapped all the same
    ]  # fmt: skip
    assert corner_log[-3:] == [*unmap, ("cuGraphicsUnregisterResource", "0x600b"), ("note", "buffer released")]
    assert "pointer error: CUDA-GL interop on cuda:1 (mapped pointer) failed: CUDA_ERROR_INVALID_VALUE" in out
    assert "pci 0000:0B:00.0" in out
