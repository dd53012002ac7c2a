"""Kernel runtime: one source in csrc/, two compilers.

``module(name, device)`` returns the compiled ``csrc/<name>.cu`` for a torch
device: built with NVRTC (cuda-python) into a cubin and launched through the
CUDA driver API on torch's current stream for CUDA devices, or built with the
host C++ compiler into a shared library loaded with ctypes for the CPU.
Every kernel takes ``(Params, n)`` where Params is a ``ctypes.Structure``
mirroring the C struct (see csrc/common.h); the same structure object serves
both launches.

Compiled artifacts are cached on disk in ``$GLRAST_CACHE_DIR`` (default
``~/.cache/glrast``) under a key that hashes the source, every header it
includes, the flags, the compiler's version, glrast's version and the target
architecture. Writes go to a private temporary directory first and are moved
into place with ``os.replace``, so concurrent processes never block on a lock
and an interrupted build leaves nothing half-written behind.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ._resources import resource_dir
from ._version import __version__

HOST_FLAGS = ("-std=c++20", "-O3", "-fopenmp", "-shared", "-fPIC", "-x", "c++")
NVRTC_FLAGS = ("-std=c++17", "-default-device")
CUDA_BLOCK = 256

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
_lock = threading.Lock()
_modules: dict[tuple[str, str], object] = {}


class KernelBuildError(RuntimeError):
    """A kernel failed to compile; the message holds the compiler's log."""


def csrc_dir() -> Path:
    return resource_dir("csrc")


def cache_dir() -> Path:
    root = os.environ.get("GLRAST_CACHE_DIR") or Path.home() / ".cache" / "glrast"
    return Path(root)


def kernel_names() -> list[str]:
    """Every kernel source shipped with glrast (csrc/*.cu), without the suffix."""
    return sorted(p.stem for p in csrc_dir().glob("*.cu"))


def _source_closure(name: str) -> list[Path]:
    """The .cu file and every header it includes (transitively), in a stable order."""
    root = csrc_dir()
    seen: list[Path] = []
    pending = [root / f"{name}.cu"]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"kernel source {path} not found")
        seen.append(path)
        pending.extend(root / inc for inc in _INCLUDE_RE.findall(path.read_text()))
    return seen


def _digest(name: str, *parts: str) -> str:
    h = hashlib.sha256()
    for path in _source_closure(name):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for part in (*parts, __version__):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]


def _publish(tmp_dir: str, built: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, final)
    shutil.rmtree(tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Host build


@functools.lru_cache(maxsize=None)
def host_compiler() -> tuple[str, str]:
    """(path, version line) of the C++ compiler; $CXX overrides the default c++."""
    wanted = os.environ.get("CXX", "c++")
    path = shutil.which(wanted) or shutil.which("g++") or shutil.which("clang++")
    if path is None:
        raise KernelBuildError(
            f"no C++ compiler found (looked for $CXX={wanted!r}, g++, clang++); CPU tensors "
            "need one to build glrast's kernels: install g++ (Debian/Ubuntu: apt-get install g++)"
        )
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return path, (out.stdout.splitlines() or ["unknown"])[0]


def _extra_host_flags() -> tuple[str, ...]:
    return tuple(os.environ.get("GLRAST_HOST_CFLAGS", "").split())


def build_host(name: str) -> Path:
    """Compile csrc/<name>.cu with the host compiler; returns the cached .so path."""
    compiler, version = host_compiler()
    flags = HOST_FLAGS + _extra_host_flags()
    key = _digest(name, "host", version, *flags)
    final = cache_dir() / "host" / f"{name}-{key}.so"
    if final.is_file():
        return final
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_dir())
    out = Path(tmp) / f"{name}.so"
    cmd = [compiler, *flags, str(csrc_dir() / f"{name}.cu"), "-I", str(csrc_dir()), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KernelBuildError(f"host build of csrc/{name}.cu failed:\n$ {' '.join(cmd)}\n{res.stderr}")
    _publish(tmp, out, final)
    return final


class HostModule:
    """A host-compiled kernel library; kernels run synchronously under OpenMP."""

    def __init__(self, name: str):
        self.name = name
        self._lib = ctypes.CDLL(str(build_host(name)))

    def launch(self, kernel: str, params: ctypes.Structure, n: int) -> None:
        if n <= 0:
            return
        fn = getattr(self._lib, kernel)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        fn(ctypes.addressof(params), n)


# ---------------------------------------------------------------------------
# NVRTC build


def _check_cuda(result, what: str):
    """Unpack a cuda-python (err, *values) tuple, raising with the error's name."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err!r}")
    return values[0] if len(values) == 1 else values


@functools.lru_cache(maxsize=None)
def nvrtc_version() -> str:
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        raise KernelBuildError(
            "NVRTC is not available: install cuda-python and nvidia-cuda-nvrtc "
            f"(pip install cuda-python nvidia-cuda-nvrtc) ({e})"
        ) from None
    major, minor = _check_cuda(nvrtc.nvrtcVersion(), "nvrtcVersion")
    return f"{major}.{minor}"


@functools.lru_cache(maxsize=None)
def nvrtc_supported_archs() -> tuple[int, ...]:
    from cuda.bindings import nvrtc

    num = _check_cuda(nvrtc.nvrtcGetNumSupportedArchs(), "nvrtcGetNumSupportedArchs")
    archs = [0] * num
    _check_cuda(nvrtc.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return tuple(int(a) for a in archs)


def select_target(arch: int, supported: tuple[int, ...]) -> tuple[str, int]:
    """Pick ("cubin", arch) when NVRTC knows the GPU's architecture, else
    ("ptx", newest known arch not above it) so the driver JIT-compiles forward.
    `arch` is the compute capability as major*10+minor (e.g. 90)."""
    if arch in supported:
        return "cubin", arch
    older = [a for a in supported if a <= arch]
    if not older:
        raise KernelBuildError(
            f"GPU architecture sm_{arch} is older than every architecture this NVRTC supports "
            f"({', '.join(f'sm_{a}' for a in supported)}); install an NVRTC that supports it"
        )
    return "ptx", max(older)


def build_nvrtc(name: str, arch: int, target: str = "cubin") -> bytes:
    """Compile csrc/<name>.cu with NVRTC for sm_<arch>; returns cubin or PTX bytes."""
    from cuda.bindings import nvrtc

    version = nvrtc_version()
    arch_flag = f"--gpu-architecture={'sm' if target == 'cubin' else 'compute'}_{arch}"
    flags = (*NVRTC_FLAGS, arch_flag, f"-I{csrc_dir()}")
    key = _digest(name, "nvrtc", version, target, *flags[:-1])
    final = cache_dir() / "nvrtc" / f"{name}-sm{arch}-{key}.{target}"
    if final.is_file():
        return final.read_bytes()
    source = (csrc_dir() / f"{name}.cu").read_bytes()
    prog = _check_cuda(nvrtc.nvrtcCreateProgram(source, f"{name}.cu".encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(flags), [f.encode() for f in flags])
        size = _check_cuda(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        _check_cuda((nvrtc.nvrtcGetProgramLog(prog, log)[0], None), "nvrtcGetProgramLog")
        if int(err) != 0:
            raise KernelBuildError(
                f"NVRTC build of csrc/{name}.cu for sm_{arch} failed ({err!r}):\n"
                f"{log.decode(errors='replace')}"
            )
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
            if target == "cubin"
            else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        size = _check_cuda(get_size(prog), "nvrtc get size")
        image = b" " * size
        _check_cuda((get(prog, image)[0], None), "nvrtc get image")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_dir())
    out = Path(tmp) / final.name
    out.write_bytes(image)
    _publish(tmp, out, final)
    return image


class CudaModule:
    """An NVRTC-compiled module loaded into torch's context on one CUDA device."""

    def __init__(self, name: str, device: torch.device):
        from cuda.bindings import driver

        self.name = name
        self.device = device
        self._driver = driver
        torch.cuda.init()
        with torch.cuda.device(device):
            torch.cuda.current_stream(device)  # makes torch's primary context current
            major, minor = torch.cuda.get_device_capability(device)
            target, arch = select_target(major * 10 + minor, nvrtc_supported_archs())
            image = build_nvrtc(name, arch, target)
            self._module = _check_cuda(driver.cuModuleLoadData(image), f"cuModuleLoadData({name})")
        self._functions: dict[str, object] = {}
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        self._max_blocks = sms * 32

    def launch(self, kernel: str, params: ctypes.Structure, n: int) -> None:
        if n <= 0:
            return
        driver = self._driver
        fn = self._functions.get(kernel)
        if fn is None:
            fn = _check_cuda(driver.cuModuleGetFunction(self._module, kernel.encode()), f"cuModuleGetFunction({kernel})")
            self._functions[kernel] = fn
        count = ctypes.c_longlong(n)
        args = (ctypes.c_void_p * 2)(ctypes.addressof(params), ctypes.addressof(count))
        blocks = min((n + CUDA_BLOCK - 1) // CUDA_BLOCK, self._max_blocks)
        stream = torch.cuda.current_stream(self.device).cuda_stream
        with torch.cuda.device(self.device):
            (err,) = driver.cuLaunchKernel(fn, blocks, 1, 1, CUDA_BLOCK, 1, 1, 0, stream, ctypes.addressof(args), 0)
        if int(err) != 0:
            raise RuntimeError(f"launch of {self.name}.{kernel} on {self.device} failed: {err!r}")


def module(name: str, device: torch.device) -> HostModule | CudaModule:
    """The compiled csrc/<name>.cu for `device` (built and loaded on first use)."""
    key = (name, str(device))
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = CudaModule(name, device) if device.type == "cuda" else HostModule(name)
                _modules[key] = mod
    return mod


def ptr(t: torch.Tensor | None) -> int | None:
    """Data pointer for a kernel parameter (None for an absent optional tensor)."""
    return None if t is None else t.data_ptr()
