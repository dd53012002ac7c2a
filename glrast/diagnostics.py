"""`glrast doctor`: what glrast finds on this machine, and how to fix what fails.

`doctor()` gathers facts (torch, EGL and its devices, a GL context per EGL device,
the CUDA driver, NVRTC, the host compiler, the cache) into a dict, then
`diagnose()` turns them into problems with fixes; `format_report()` prints both.
`diagnose` is a pure function of the facts, so every rule is testable without
the hardware it is about. Importing this module does nothing; the probes import
their libraries when they run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ._version import __version__

MIN_GL_VERSION = 430  # ModernGL's version_code: major * 100 + minor * 10
GLVND_VENDOR_DIRS = ("/etc/glvnd/egl_vendor.d", "/usr/share/glvnd/egl_vendor.d")
ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "GLRAST_CACHE_DIR",
    "GLRAST_HOST_CFLAGS",
    "GLRAST_ACCUMULATOR_MB",
    "CXX",
    "GLCONTEXT_DEVICE_INDEX",
    "GLCONTEXT_LINUX_LIBEGL",
    "__EGL_VENDOR_LIBRARY_FILENAMES",
    "__EGL_VENDOR_LIBRARY_DIRS",
    "EGL_PLATFORM",
    "LIBGL_ALWAYS_SOFTWARE",
    "GALLIUM_DRIVER",
)
NVIDIA_VENDOR_JSON = '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}'
_COMPILER_CHECK = textwrap.dedent(
    """
    #include <atomic>
    extern "C" float glrast_doctor_check(float* x, long long n) {
        #pragma omp parallel for
        for (long long i = 0; i < n; ++i) std::atomic_ref<float>(x[0]).fetch_add(1.0f);
        return x[0];
    }
    """
)


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


# ---------------------------------------------------------------------------
# Probes: each returns plain data and never raises.


def _platform_facts() -> dict[str, Any]:
    try:
        kernel = Path("/proc/version").read_text()
    except OSError:
        kernel = ""
    wsl = "microsoft" in kernel.lower() or "WSL_DISTRO_NAME" in os.environ
    return {"python": sys.version.split()[0], "system": platform.platform(), "wsl": wsl}


def _torch_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
    }
    if facts["cuda_available"]:
        from .cuda_driver import pci_bus_id

        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            facts["devices"].append(
                {
                    "index": index,
                    "name": torch.cuda.get_device_name(index),
                    "arch": major * 10 + minor,
                    "pci_bus_id": pci_bus_id(index),
                }
            )
    return facts


def _vendor_files() -> list[dict[str, str]]:
    """glvnd's EGL vendor files, looked up the way glvnd does."""
    named = os.environ.get("__EGL_VENDOR_LIBRARY_FILENAMES")
    if named:
        paths = [Path(p) for p in named.split(":") if p]
    else:
        dirs = os.environ.get("__EGL_VENDOR_LIBRARY_DIRS")
        folders = dirs.split(":") if dirs else GLVND_VENDOR_DIRS
        paths = sorted(p for d in folders if Path(d).is_dir() for p in Path(d).glob("*.json"))
    files = []
    for path in paths:
        try:
            library = json.loads(path.read_text())["ICD"]["library_path"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            library = f"unreadable ({_error_text(e)})"
        files.append({"file": str(path), "library": library})
    return files


def _egl_facts() -> dict[str, Any]:
    from ctypes.util import find_library

    from . import egl

    facts: dict[str, Any] = {
        "library": egl.library_name(),
        "loaded": False,
        "error": None,
        "client_version": None,
        "client_extensions": [],
        "devices": [],
        "vendor_files": _vendor_files(),
        "nvidia_library": find_library("EGL_nvidia"),
    }
    try:
        facts["client_version"] = egl.client_version()
        facts["client_extensions"] = egl.client_extensions()
        facts["loaded"] = True
        facts["devices"] = [
            {
                "index": d.index,
                "cuda_ordinal": d.cuda_ordinal,
                "pci_bus_id": d.pci_bus_id,
                "drm_file": d.drm_file,
                "software": d.software,
                "extensions": list(d.extensions),
            }
            for d in egl.query_devices()
        ]
    except Exception as e:  # report whatever EGL does, never fail the report
        facts["error"] = _error_text(e)
    return facts


def _gl_context_facts(device_index: int) -> dict[str, Any]:
    """Open a headless context on one EGL device and read its strings."""
    import moderngl

    facts: dict[str, Any] = {"device_index": device_index}
    try:
        ctx = moderngl.create_context(standalone=True, backend="egl", device_index=device_index)
    except Exception as e:
        facts["error"] = _error_text(e)
        return facts
    try:
        info = ctx.info
        facts.update(
            vendor=info["GL_VENDOR"],
            renderer=info["GL_RENDERER"],
            version=info["GL_VERSION"],
            version_code=ctx.version_code,
            max_texture_size=info["GL_MAX_TEXTURE_SIZE"],
        )
    finally:
        ctx.release()
    return facts


def _gl_facts(egl_facts: dict[str, Any], torch_facts: dict[str, Any]) -> dict[str, Any]:
    from . import egl

    # glcontext lets $GLCONTEXT_DEVICE_INDEX override device_index; probe the real devices.
    override = os.environ.pop(egl.DEVICE_INDEX_ENV, None)
    try:
        indices = [d["index"] for d in egl_facts["devices"]] or [0]
        contexts = [_gl_context_facts(i) for i in indices]
    finally:
        if override is not None:
            os.environ[egl.DEVICE_INDEX_ENV] = override
    cuda_matches = []
    for dev in torch_facts["devices"]:
        match: dict[str, Any] = {"cuda": dev["index"], "egl_device": None, "error": None}
        try:
            match["egl_device"] = egl_device_match(egl_facts, dev["index"], dev["pci_bus_id"])
        except Exception as e:
            match["error"] = str(e)
        cuda_matches.append(match)
    # CPU contexts take glcontext's default device: 0, or $GLCONTEXT_DEVICE_INDEX.
    cpu_index = int(override) if override is not None and override.strip().isdigit() else 0
    return {"cpu_device_index": cpu_index, "contexts": contexts, "cuda_matches": cuda_matches}


def egl_device_match(egl_facts: dict[str, Any], cuda_index: int, pci_bus_id: str | None) -> int:
    """egl.select_device on the device list recorded in the facts."""
    from . import egl

    devices = [
        egl.EglDevice(d["index"], tuple(d["extensions"]), d["cuda_ordinal"], d["drm_file"], d["pci_bus_id"])
        for d in egl_facts["devices"]
    ]
    return egl.select_device(devices, cuda_index, pci_bus_id, os.environ.get(egl.DEVICE_INDEX_ENV))


def _cuda_facts(torch_facts: dict[str, Any]) -> dict[str, Any]:
    from . import kernels
    from .cuda_driver import check_cuda

    facts: dict[str, Any] = {
        "bindings_version": None,
        "driver": {"loaded": False, "version": None, "device_count": 0, "error": None},
        "nvrtc": {"loaded": False, "version": None, "archs": [], "error": None},
        "targets": [],
    }
    try:
        import cuda.bindings
        from cuda.bindings import driver

        facts["bindings_version"] = cuda.bindings.__version__
    except ImportError as e:
        facts["driver"]["error"] = facts["nvrtc"]["error"] = _error_text(e)
        return facts
    drv = facts["driver"]
    try:
        check_cuda(driver.cuInit(0), "cuInit")
        version = check_cuda(driver.cuDriverGetVersion(), "cuDriverGetVersion")
        drv.update(loaded=True, version=f"{version // 1000}.{version % 1000 // 10}")
        drv["device_count"] = check_cuda(driver.cuDeviceGetCount(), "cuDeviceGetCount")
    except Exception as e:  # no libcuda.so.1 raises from the bindings' loader
        drv["error"] = _error_text(e)
    nv = facts["nvrtc"]
    try:
        nv.update(loaded=True, version=kernels.nvrtc_version(), archs=list(kernels.nvrtc_supported_archs()))
    except Exception as e:
        nv.update(loaded=False, error=_error_text(e))
    if nv["loaded"]:
        for dev in torch_facts["devices"]:
            try:
                target, arch = kernels.select_target(dev["arch"], tuple(nv["archs"]))
                facts["targets"].append({"cuda": dev["index"], "target": target, "arch": arch})
            except Exception as e:
                facts["targets"].append({"cuda": dev["index"], "error": str(e)})
    return facts


def _compiler_facts() -> dict[str, Any]:
    """The host compiler, and whether it builds a C++20 + OpenMP library like the kernels."""
    import subprocess

    from . import kernels

    facts: dict[str, Any] = {"path": None, "version": None, "works": False, "error": None}
    try:
        facts["path"], facts["version"] = kernels.host_compiler()
    except Exception as e:
        facts["error"] = str(e)
        return facts
    with tempfile.TemporaryDirectory(prefix="glrast-doctor-") as tmp:
        src = Path(tmp) / "check.cu"
        src.write_text(_COMPILER_CHECK)
        cmd = [facts["path"], *kernels.HOST_FLAGS, str(src), "-o", str(Path(tmp) / "check.so")]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    facts["works"] = res.returncode == 0
    if not facts["works"]:
        facts["error"] = f"$ {' '.join(cmd)}\n{res.stderr.strip()}"
    return facts


def _cache_facts() -> dict[str, Any]:
    from . import kernels

    path = kernels.cache_dir()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    writable = existing is not None and os.access(existing, os.W_OK)
    artifacts = sum(1 for p in path.glob("*/*") if p.is_file()) if path.is_dir() else 0
    try:
        accumulator_mb: float | str = kernels.accumulator_cap_bytes() / (1 << 20)
    except ValueError as e:
        accumulator_mb = str(e)
    return {
        "dir": str(path),
        "exists": path.is_dir(),
        "writable": writable,
        "artifacts": artifacts,
        "accumulator_mb": accumulator_mb,
    }


def doctor() -> dict[str, Any]:
    """Probe this machine for everything glrast needs; returns a dict of facts
    (keys glrast, platform, env, torch, egl, gl, cuda, compiler, cache) and
    'problems': a list of {'severity': 'error'|'warning'|'note', 'problem', 'fix'}.
    Creates (and releases) one GL context per EGL device; never raises."""
    report: dict[str, Any] = {
        "glrast": {"version": __version__, "location": str(Path(__file__).resolve().parent)},
        "platform": _platform_facts(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
    report["torch"] = _torch_facts()
    report["egl"] = _egl_facts()
    report["gl"] = _gl_facts(report["egl"], report["torch"])
    report["cuda"] = _cuda_facts(report["torch"])
    report["compiler"] = _compiler_facts()
    report["cache"] = _cache_facts()
    report["problems"] = diagnose(report)
    return report


# ---------------------------------------------------------------------------
# Diagnosis: facts -> problems with fixes.


def _problem(severity: str, problem: str, fix: str) -> dict[str, str]:
    return {"severity": severity, "problem": problem, "fix": fix}


def _egl_problems(r: dict[str, Any]) -> list[dict[str, str]]:
    egl, found = r["egl"], []
    vendors = ", ".join(f"{v['file']} -> {v['library']}" for v in egl["vendor_files"]) or "none"
    if not egl["loaded"]:
        found.append(
            _problem(
                "error",
                f"EGL does not work: {egl['error']}",
                "install glvnd's libEGL and a vendor driver: `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` "
                "(Mesa, CPU rendering); on NVIDIA machines the driver's EGL library (libEGL_nvidia.so.0)",
            )
        )
        return found
    missing = {"EGL_EXT_device_enumeration", "EGL_EXT_platform_device"} - set(egl["client_extensions"])
    if missing:
        found.append(
            _problem(
                "error",
                f"libEGL lacks {', '.join(sorted(missing))}: no headless device contexts",
                "use glvnd's libEGL.so.1 (apt-get install libegl1) with Mesa or NVIDIA vendor libraries",
            )
        )
    if not egl["devices"]:
        found.append(
            _problem(
                "error",
                f"EGL lists no devices (glvnd vendor files: {vendors})",
                "install an EGL vendor: Mesa (`apt-get install libegl-mesa0 libgl1-mesa-dri`) for CPU rendering, "
                "NVIDIA's driver EGL library for GPUs",
            )
        )
    return found


def _gl_problems(r: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for_cuda = {m["egl_device"] for m in r["gl"]["cuda_matches"]}
    for ctx in r["gl"]["contexts"]:
        idx = ctx["device_index"]
        used_for_cpu = idx == r["gl"]["cpu_device_index"]
        # A device glrast does not use (e.g. Mesa's view of an NVIDIA card) only gets a note.
        severity = "error" if used_for_cpu or idx in for_cuda else "note"
        if "error" in ctx:
            found.append(
                _problem(
                    severity,
                    f"no OpenGL context on EGL device {idx}{' (used for CPU tensors)' if used_for_cpu else ''}: "
                    f"{ctx['error']}",
                    "for Mesa: `apt-get install libgl1-mesa-dri libegl-mesa0`; for NVIDIA: matching versions of the "
                    "kernel module and the driver's user-space GL/EGL libraries",
                )
            )
            continue
        if ctx["version_code"] < MIN_GL_VERSION:
            found.append(
                _problem(
                    severity,
                    f"EGL device {idx} gives OpenGL {ctx['version']}; glrast needs 4.3 or newer",
                    "update Mesa (20.0 or newer gives 4.5 on llvmpipe) or the NVIDIA driver",
                )
            )
        if "softpipe" in ctx["renderer"].lower():
            found.append(
                _problem(
                    "warning",
                    f"EGL device {idx} renders with softpipe, Mesa's slowest software rasterizer",
                    "use a Mesa built with LLVM (llvmpipe); unset GALLIUM_DRIVER=softpipe",
                )
            )
    return found


def _cuda_device_fix(r: dict[str, Any]) -> str:
    """The most likely reason NVIDIA's EGL device is missing, from what was found."""
    egl = r["egl"]
    nvidia_vendor = any("nvidia" in v["library"].lower() for v in egl["vendor_files"])
    if r["platform"]["wsl"]:
        return (
            "WSL2 has no NVIDIA EGL driver and no CUDA-GL interop; rasterize CPU tensors there "
            "(RasterizeGLContext(device='cpu')), or run on native Linux"
        )
    if not egl["nvidia_library"]:
        return (
            "install NVIDIA's EGL library libEGL_nvidia.so.0 (part of the driver; Ubuntu: libnvidia-gl-<version>); "
            "in a container give the NVIDIA runtime the graphics capability: NVIDIA_DRIVER_CAPABILITIES=all "
            "(or compute,utility,graphics)"
        )
    if not nvidia_vendor:
        return (
            "libEGL_nvidia.so.0 is installed but glvnd does not know it: create "
            f"/usr/share/glvnd/egl_vendor.d/10_nvidia.json containing {NVIDIA_VENDOR_JSON}"
        )
    return (
        "NVIDIA's EGL library is registered but reports no device for this GPU: check that its version matches the "
        "kernel module (nvidia-smi), that /dev/nvidia* are accessible, and CUDA_VISIBLE_DEVICES"
    )


def _cuda_problems(r: dict[str, Any]) -> list[dict[str, str]]:
    torch_facts, cuda = r["torch"], r["cuda"]
    drv, nv, found = cuda["driver"], cuda["nvrtc"], []
    if not torch_facts["cuda_available"]:
        if drv["loaded"] and drv["device_count"]:
            found.append(
                _problem(
                    "warning",
                    f"the NVIDIA driver sees {drv['device_count']} GPU(s) but torch {torch_facts['version']} "
                    "cannot use CUDA",
                    "install a CUDA build of torch (https://pytorch.org/get-started/locally/)",
                )
            )
        else:
            found.append(
                _problem(
                    "note",
                    "no CUDA device: glrast runs on the CPU (Mesa's GL + host-compiled kernels)",
                    "nothing to fix; CUDA tensors need an NVIDIA GPU, its driver and a CUDA build of torch",
                )
            )
        return found
    for match in r["gl"]["cuda_matches"]:
        if match["error"]:
            first_line = match["error"].splitlines()[0]
            found.append(
                _problem(
                    "error", f"CUDA tensors on cuda:{match['cuda']} cannot render: {first_line}", _cuda_device_fix(r)
                )
            )
    if not nv["loaded"]:
        found.append(
            _problem(
                "error",
                f"NVRTC does not load, so kernels cannot be built for CUDA tensors: {nv['error']}",
                "pip install cuda-python nvidia-cuda-nvrtc",
            )
        )
    elif drv["loaded"]:
        nv_major, nv_minor = (int(x) for x in nv["version"].split("."))
        drv_major, drv_minor = (int(x) for x in drv["version"].split("."))
        if nv_major > drv_major:
            found.append(
                _problem(
                    "error",
                    f"NVRTC {nv['version']} is newer than the driver's CUDA {drv['version']}: the driver cannot load "
                    "its kernels",
                    f"update the NVIDIA driver to one for CUDA {nv_major}, or install the NVRTC of CUDA {drv_major} "
                    f"(pip install 'nvidia-cuda-nvrtc-cu{drv_major}' or 'nvidia-cuda-nvrtc=={drv_major}.*')",
                )
            )
        elif (nv_major, nv_minor) > (drv_major, drv_minor) and any(t.get("target") == "ptx" for t in cuda["targets"]):
            found.append(
                _problem(
                    "warning",
                    f"a GPU needs PTX, and NVRTC {nv['version']} emits PTX newer than the driver's CUDA "
                    f"{drv['version']} can JIT",
                    f"update the NVIDIA driver, or install nvidia-cuda-nvrtc=={drv_major}.{drv_minor}.*",
                )
            )
    for t in cuda["targets"]:
        if "error" in t:
            found.append(_problem("error", f"cuda:{t['cuda']}: {t['error']}", "install an NVRTC that supports it"))
        elif t["target"] == "ptx":
            found.append(
                _problem(
                    "note",
                    f"NVRTC {nv['version']} does not know cuda:{t['cuda']}'s architecture; kernels are built as "
                    f"compute_{t['arch']} PTX and JIT-compiled by the driver (first use is slower)",
                    "a newer nvidia-cuda-nvrtc builds native cubins",
                )
            )
    return found


def _host_problems(r: dict[str, Any]) -> list[dict[str, str]]:
    comp, cache, found = r["compiler"], r["cache"], []
    severity = "warning" if r["torch"]["cuda_available"] else "error"
    if comp["path"] is None:
        found.append(
            _problem(
                severity,
                "no C++ compiler: kernels for CPU tensors cannot be built",
                "install g++ 10 or newer (`apt-get install g++`) or set $CXX",
            )
        )
    elif not comp["works"]:
        found.append(
            _problem(
                severity,
                f"{comp['path']} cannot build a C++20 + OpenMP library like glrast's kernels:\n{comp['error']}",
                "glrast needs std::atomic_ref and OpenMP: g++ 10+ (OpenMP built in), or clang++ 15+ with libomp-dev",
            )
        )
    if not cache["writable"]:
        found.append(
            _problem(
                "error",
                f"the kernel cache {cache['dir']} is not writable",
                "set GLRAST_CACHE_DIR to a writable directory",
            )
        )
    if isinstance(cache["accumulator_mb"], str):
        fix = "set GLRAST_ACCUMULATOR_MB to a size in MiB, or unset it"
        found.append(_problem("error", cache["accumulator_mb"], fix))
    if "GLCONTEXT_DEVICE_INDEX" in r["env"]:
        found.append(
            _problem(
                "warning",
                f"GLCONTEXT_DEVICE_INDEX={r['env']['GLCONTEXT_DEVICE_INDEX']} overrides glrast's EGL device choice",
                "unset it: glrast picks the EGL device of each CUDA device itself (and refuses a mismatch)",
            )
        )
    return found


def diagnose(report: dict[str, Any]) -> list[dict[str, str]]:
    """Problems (severity 'error', 'warning' or 'note') with fixes, from doctor()'s facts."""
    return [*_egl_problems(report), *_gl_problems(report), *_cuda_problems(report), *_host_problems(report)]


# ---------------------------------------------------------------------------
# Text report


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def format_report(report: dict[str, Any]) -> str:
    """A human-readable rendering of doctor()'s dict."""
    r, lines = report, []
    add = lines.append
    add(f"glrast {r['glrast']['version']} ({r['glrast']['location']})")
    add(f"  python {r['platform']['python']} on {r['platform']['system']}{' (WSL)' if r['platform']['wsl'] else ''}")
    for key, value in r["env"].items():
        add(f"  ${key}={value}")
    t = r["torch"]
    add(f"torch {t['version']}: CUDA build {t['cuda_build'] or 'none'}, CUDA available: {t['cuda_available']}")
    for d in t["devices"]:
        add(f"  cuda:{d['index']} {d['name']}, sm_{d['arch']}, PCI {d['pci_bus_id'] or 'unknown'}")
    e = r["egl"]
    add(f"EGL {e['library']}: {e['client_version'] if e['loaded'] else 'not working: ' + str(e['error'])}")
    add(_wrap("client extensions: " + (" ".join(e["client_extensions"]) or "none"), "  "))
    for v in e["vendor_files"] or [{"file": "none found", "library": "-"}]:
        add(f"  glvnd vendor file: {v['file']} -> {v['library']}")
    add(f"  libEGL_nvidia: {e['nvidia_library'] or 'not installed'}")
    gl_by_index = {c["device_index"]: c for c in r["gl"]["contexts"]}
    for d in e["devices"]:
        kind = "software (Mesa)" if d["software"] else (d["drm_file"] or "no DRM node")
        cuda = "-" if d["cuda_ordinal"] is None else d["cuda_ordinal"]
        add(f"  EGL device {d['index']}: {kind}, CUDA ordinal {cuda}, PCI {d['pci_bus_id'] or '-'}")
        add(_wrap("extensions: " + (" ".join(d["extensions"]) or "none"), "      "))
    add("OpenGL (one headless context per EGL device):")
    for c in gl_by_index.values():
        role = " <- CPU tensors" if c["device_index"] == r["gl"]["cpu_device_index"] else ""
        if "error" in c:
            add(f"  device {c['device_index']}: FAILED: {c['error']}{role}")
        else:
            add(f"  device {c['device_index']}: {c['vendor']} | {c['renderer']} | {c['version']}{role}")
    for m in r["gl"]["cuda_matches"]:
        add(
            f"  cuda:{m['cuda']} -> EGL device {m['egl_device']}"
            if m["error"] is None
            else f"  cuda:{m['cuda']} -> none"
        )
    cuda = r["cuda"]
    drv, nv = cuda["driver"], cuda["nvrtc"]
    add(f"CUDA: cuda-bindings {cuda['bindings_version'] or 'not installed'}")
    add(
        f"  driver: CUDA {drv['version']}, {drv['device_count']} device(s)"
        if drv["loaded"]
        else f"  driver: not loaded ({drv['error']})"
    )
    add(
        f"  NVRTC {nv['version']}: " + " ".join(f"sm_{a}" for a in nv["archs"])
        if nv["loaded"]
        else f"  NVRTC: not loaded ({nv['error']})"
    )
    for tgt in cuda["targets"]:
        if "error" not in tgt:
            add(f"  cuda:{tgt['cuda']} kernels: {tgt['target']} for sm_{tgt['arch']}")
    comp = r["compiler"]
    if comp["path"]:
        state = "C++20 + OpenMP test build ok" if comp["works"] else "test build FAILED"
        add(f"host compiler: {comp['path']} ({comp['version']}): {state}")
    else:
        add("host compiler: none found")
    ca = r["cache"]
    add(
        f"kernel cache: {ca['dir']} ({'writable' if ca['writable'] else 'NOT writable'}, {ca['artifacts']} artifact(s))"
    )
    cap = ca["accumulator_mb"]
    cap_text = f"{cap:g} MiB" if isinstance(cap, float) else f"invalid ({cap})"
    add(f"gradient accumulator: per-thread copies up to {cap_text} a gradient ($GLRAST_ACCUMULATOR_MB)")
    problems = r["problems"]
    add("")
    if not problems:
        add("No problems found.")
    for p in problems:
        add(f"{p['severity'].upper()}: {p['problem']}")
        add(_wrap("fix: " + p["fix"], "    "))
    errors = sum(p["severity"] == "error" for p in problems)
    add(f"\n{errors} error(s): glrast cannot fully work here." if errors else "\nglrast can run here.")
    return "\n".join(lines)
