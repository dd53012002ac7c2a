"""`glrast doctor`: the report on this machine (function and command line), and
each diagnosis rule on made-up facts."""

import copy
import json
import subprocess
import sys

import pytest
import torch

import glrast
from glrast import kernels
from glrast.diagnostics import diagnose, format_report

SEVERITIES = {"error", "warning", "note"}


@pytest.fixture(scope="module")
def report():
    return glrast.doctor()


def test_report_holds_every_section(report):
    assert set(report) >= {"glrast", "platform", "env", "torch", "egl", "gl", "cuda", "compiler", "cache", "problems"}
    assert report["glrast"]["version"] == glrast.__version__
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(report["torch"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    json.dumps(report)  # plain data only


def test_report_egl_and_gl(report):
    egl = report["egl"]
    assert egl["loaded"], egl["error"]
    assert "EGL_EXT_device_enumeration" in egl["client_extensions"]
    assert egl["devices"], "the test machines have at least Mesa's software device"
    for i, dev in enumerate(egl["devices"]):
        assert dev["index"] == i
        assert set(dev) >= {"cuda_ordinal", "pci_bus_id", "extensions", "software"}
    cpu_ctx = next(c for c in report["gl"]["contexts"] if c["device_index"] == report["gl"]["cpu_device_index"])
    assert "error" not in cpu_ctx, cpu_ctx
    # The same strings a RasterizeGLContext reports on this machine.
    with glrast.RasterizeGLContext(device="cpu") as ctx:
        info = ctx.info
    assert (cpu_ctx["vendor"], cpu_ctx["renderer"], cpu_ctx["version"]) == (
        info["vendor"],
        info["renderer"],
        info["version"],
    )
    assert cpu_ctx["version_code"] >= 430


def test_report_cuda_compiler_cache(report):
    nv = report["cuda"]["nvrtc"]
    assert nv["loaded"], nv["error"]
    assert nv["version"] == kernels.nvrtc_version()
    assert nv["archs"] == list(kernels.nvrtc_supported_archs())
    drv = report["cuda"]["driver"]
    assert drv["loaded"] or drv["error"]
    comp = report["compiler"]
    assert (comp["path"], comp["version"]) == kernels.host_compiler()
    assert comp["works"], comp["error"]
    assert report["cache"]["dir"] == str(kernels.cache_dir())
    for p in report["problems"]:
        assert p["severity"] in SEVERITIES and p["problem"] and p["fix"]
    assert not [p for p in report["problems"] if p["severity"] == "error"], report["problems"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glrast", "doctor", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_text(report):
    res = _run_cli()
    assert res.returncode == 0, res.stderr
    out = res.stdout
    cpu_ctx = report["gl"]["contexts"][0]
    for expected in (
        f"glrast {glrast.__version__}",
        f"torch {torch.__version__}",
        "client extensions: EGL_EXT",
        "EGL device 0:",
        f"{cpu_ctx['vendor']} | {cpu_ctx['renderer']} | {cpu_ctx['version']}",
        f"NVRTC {kernels.nvrtc_version()}: sm_75",
        f"host compiler: {kernels.host_compiler()[0]}",
        f"kernel cache: {kernels.cache_dir()}",
        "glrast can run here.",
        "libEGL_nvidia: ",
        "glvnd vendor file: ",
        "  driver: CUDA " if report["cuda"]["driver"]["loaded"] else "  driver: not loaded (",
        *(f"EGL device {d['index']}: " for d in report["egl"]["devices"]),
        *(f"CUDA ordinal {'-' if d['cuda_ordinal'] is None else d['cuda_ordinal']}" for d in report["egl"]["devices"]),
        *(f"{p['severity'].upper()}: {p['problem']}" for p in report["problems"]),
        *(
            f"cuda:{m['cuda']} -> " + ("none" if m["error"] else f"EGL device {m['egl_device']}")
            for m in report["gl"]["cuda_matches"]
        ),
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    if not torch.cuda.is_available():
        assert "NOTE: no CUDA device: glrast runs on the CPU" in out


def test_cli_json():
    res = _run_cli("--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["egl"]["client_extensions"] and data["gl"]["contexts"] and data["cuda"]["nvrtc"]["version"]


# ---------------------------------------------------------------------------
# Diagnosis rules on made-up machines


def healthy_cpu():
    """Facts of a working CPU-only machine (Mesa llvmpipe, g++, no GPU)."""
    return {
        "glrast": {"version": glrast.__version__, "location": "/x"},
        "platform": {"python": "3.11", "system": "Linux", "wsl": False},
        "env": {},
        "torch": {"version": "2.5.0+cpu", "cuda_build": None, "cuda_available": False, "devices": []},
        "egl": {
            "library": "libEGL.so.1",
            "loaded": True,
            "error": None,
            "client_version": "1.5 libglvnd",
            "client_extensions": ["EGL_EXT_device_enumeration", "EGL_EXT_platform_device"],
            "devices": [
                {
                    "index": 0,
                    "cuda_ordinal": None,
                    "pci_bus_id": None,
                    "drm_file": None,
                    "software": True,
                    "extensions": ["EGL_MESA_device_software"],
                }
            ],
            "vendor_files": [{"file": "/usr/share/glvnd/egl_vendor.d/50_mesa.json", "library": "libEGL_mesa.so.0"}],
            "nvidia_library": None,
        },
        "gl": {
            "cpu_device_index": 0,
            "contexts": [
                {
                    "device_index": 0,
                    "vendor": "Mesa",
                    "renderer": "llvmpipe (LLVM 15.0.6, 256 bits)",
                    "version": "4.5 (Core Profile) Mesa 22.3.6",
                    "version_code": 450,
                    "max_texture_size": 16384,
                }
            ],
            "cuda_matches": [],
        },
        "cuda": {
            "bindings_version": "13.0.0",
            "driver": {"loaded": False, "version": None, "device_count": 0, "error": "no libcuda"},
            "nvrtc": {"loaded": True, "version": "13.0", "archs": [75, 80, 90, 120], "error": None},
            "targets": [],
        },
        "compiler": {"path": "/usr/bin/c++", "version": "c++ 12", "works": True, "error": None},
        "cache": {
            "dir": "/home/u/.cache/glrast",
            "exists": True,
            "writable": True,
            "artifacts": 3,
            "accumulator_mb": 256.0,
        },
    }


def with_gpu(facts, *, arch=90, driver="13.0", match_error=None):
    """The same machine with one CUDA GPU, torch's CUDA build and NVIDIA's EGL device."""
    f = copy.deepcopy(facts)
    f["torch"].update(cuda_build="13.0", cuda_available=True)
    f["torch"]["devices"] = [{"index": 0, "name": "GPU", "arch": arch, "pci_bus_id": "0000:01:00.0"}]
    f["cuda"]["driver"] = {"loaded": True, "version": driver, "device_count": 1, "error": None}
    archs = f["cuda"]["nvrtc"]["archs"]
    target = ("cubin", arch) if arch in archs else ("ptx", max(a for a in archs if a <= arch))
    f["cuda"]["targets"] = [{"cuda": 0, "target": target[0], "arch": target[1]}]
    f["egl"]["nvidia_library"] = "libEGL_nvidia.so.0"
    f["egl"]["vendor_files"].append(
        {"file": "/usr/share/glvnd/egl_vendor.d/10_nvidia.json", "library": "libEGL_nvidia.so.0"}
    )
    f["gl"]["cuda_matches"] = [{"cuda": 0, "egl_device": None if match_error else 1, "error": match_error}]
    return f


def only(problems, severity):
    return [p for p in problems if p["severity"] == severity]


def test_healthy_machines_have_no_errors():
    cpu = healthy_cpu()
    problems = diagnose(cpu)
    assert not only(problems, "error") and not only(problems, "warning")
    assert "no CUDA device" in only(problems, "note")[0]["problem"]
    assert diagnose(with_gpu(cpu)) == []
    text = format_report({**cpu, "problems": problems})
    assert "NOTE: no CUDA device" in text and "glrast can run here." in text


@pytest.mark.parametrize(
    "mutate,severity,problem,fix",
    [
        (
            lambda f: f["egl"].update(loaded=False, error="OSError: libEGL.so.1: cannot open"),
            "error",
            "EGL does not work: OSError",
            "apt-get install libegl1",
        ),
        (lambda f: f["egl"].update(devices=[]), "error", "EGL lists no devices", "libegl-mesa0"),
        (
            lambda f: f["egl"].update(client_extensions=["EGL_EXT_platform_base"]),
            "error",
            "lacks EGL_EXT_device_enumeration, EGL_EXT_platform_device",
            "glvnd",
        ),
        (
            lambda f: f["gl"]["contexts"][0].update(error="Exception: eglInitialize failed (0x3001)"),
            "error",
            "no OpenGL context on EGL device 0 (used for CPU tensors)",
            "libgl1-mesa-dri",
        ),
        (
            lambda f: f["gl"]["contexts"][0].update(version="3.3 Mesa", version_code=330),
            "error",
            "needs 4.3 or newer",
            "update Mesa",
        ),
        (lambda f: f["gl"]["contexts"][0].update(renderer="softpipe"), "warning", "softpipe", "llvmpipe"),
        (
            lambda f: f["compiler"].update(path=None, version=None, works=False),
            "error",
            "no C++ compiler",
            "apt-get install g++",
        ),
        (
            lambda f: f["compiler"].update(works=False, error="error: 'atomic_ref' is not a member of 'std'"),
            "error",
            "atomic_ref",
            "g++ 10+",
        ),
        (lambda f: f["cache"].update(writable=False), "error", "not writable", "GLRAST_CACHE_DIR"),
        (
            lambda f: f["cache"].update(accumulator_mb="$GLRAST_ACCUMULATOR_MB must be a number of MiB >= 0, got 'x'"),
            "error",
            "GLRAST_ACCUMULATOR_MB must be a number",
            "size in MiB",
        ),
        (lambda f: f["env"].update(GLCONTEXT_DEVICE_INDEX="1"), "warning", "GLCONTEXT_DEVICE_INDEX=1", "unset it"),
        (
            lambda f: f["cuda"]["driver"].update(loaded=True, version="12.4", device_count=2),
            "warning",
            "driver sees 2 GPU(s) but torch 2.5.0+cpu cannot use CUDA",
            "CUDA build of torch",
        ),
    ],
)
def test_cpu_machine_rules(mutate, severity, problem, fix):
    facts = healthy_cpu()
    mutate(facts)
    hits = [p for p in diagnose(facts) if problem in p["problem"]]
    assert len(hits) == 1, diagnose(facts)
    assert hits[0]["severity"] == severity and fix in hits[0]["fix"]


def _gpu_problem(facts, text):
    hits = [p for p in diagnose(facts) if text in p["problem"]]
    assert len(hits) == 1, diagnose(facts)
    return hits[0]


def test_gpu_without_nvidia_egl():
    error = "no EGL device for CUDA device 0 (PCI 0000:01:00.0): no EGL device reports a CUDA ordinal\nmore"
    mesa_only = with_gpu(healthy_cpu(), match_error=error)
    mesa_only["egl"]["nvidia_library"] = None
    mesa_only["egl"]["vendor_files"].pop()
    p = _gpu_problem(mesa_only, "cuda:0 cannot render")
    assert p["severity"] == "error" and "more" not in p["problem"]
    assert "libEGL_nvidia.so.0" in p["fix"] and "NVIDIA_DRIVER_CAPABILITIES" in p["fix"]

    no_vendor_file = copy.deepcopy(mesa_only)
    no_vendor_file["egl"]["nvidia_library"] = "libEGL_nvidia.so.0"
    assert "10_nvidia.json" in _gpu_problem(no_vendor_file, "cuda:0 cannot render")["fix"]

    registered = with_gpu(healthy_cpu(), match_error=error)
    assert "kernel module" in _gpu_problem(registered, "cuda:0 cannot render")["fix"]

    wsl = copy.deepcopy(mesa_only)
    wsl["platform"]["wsl"] = True
    assert "WSL2" in _gpu_problem(wsl, "cuda:0 cannot render")["fix"]


def test_gpu_nvrtc_rules():
    old_driver = with_gpu(healthy_cpu(), driver="12.4")
    p = _gpu_problem(old_driver, "NVRTC 13.0 is newer than the driver's CUDA 12.4")
    assert p["severity"] == "error" and "nvidia-cuda-nvrtc==12.*" in p["fix"]

    new_gpu = with_gpu(healthy_cpu(), arch=130)
    p = _gpu_problem(new_gpu, "compute_120 PTX")
    assert p["severity"] == "note"
    new_gpu["cuda"]["nvrtc"]["version"] = "13.2"
    assert _gpu_problem(new_gpu, "PTX newer than the driver")["severity"] == "warning"

    no_nvrtc = with_gpu(healthy_cpu())
    no_nvrtc["cuda"]["nvrtc"] = {"loaded": False, "version": None, "archs": [], "error": "no libnvrtc"}
    no_nvrtc["cuda"]["targets"] = []
    assert "pip install cuda-python nvidia-cuda-nvrtc" in _gpu_problem(no_nvrtc, "NVRTC does not load")["fix"]

    no_compiler = with_gpu(healthy_cpu())
    no_compiler["compiler"].update(path=None, works=False)
    assert _gpu_problem(no_compiler, "no C++ compiler")["severity"] == "warning"  # CUDA tensors still work


def test_unused_device_failures_are_notes():
    facts = with_gpu(healthy_cpu())  # cuda:0 is EGL device 1
    unused = {"device_index": 2, "error": "Exception: eglInitialize failed (0x3001)"}
    facts["gl"]["contexts"] += [{**facts["gl"]["contexts"][0], "device_index": 1}, unused]
    assert [p["severity"] for p in diagnose(facts)] == ["note"]
    facts["gl"]["contexts"][1] = {"device_index": 1, "error": "Exception: eglInitialize failed (0x3001)"}
    assert _gpu_problem(facts, "no OpenGL context on EGL device 1")["severity"] == "error"
