"""Kernel runtime: one source in csrc/, two compilers.

``module(name, device)`` returns the compiled ``csrc/<name>.cu`` for a torch
device: built with NVRTC (cuda-python) into a cubin and launched through the
CUDA driver API on torch's current stream for CUDA devices, or built with the
host C++ compiler into a shared library loaded with ctypes for the CPU.
Every kernel takes ``(params, n)`` where params is a `params.Params` mirror of
the C struct (see csrc/common.h); the same structure object serves both
launches, and each mirror is checked against the compiled struct's exported
layout the first time a module launches with it (glrast/params.py). Scatter-adds
of gradients go through `accumulator` (per-thread copies on the CPU, atomics on
CUDA), whose memory is capped by ``$GLRAST_ACCUMULATOR_MB``.

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
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from . import ids
from ._resources import resource_dir
from ._version import __version__
from .cuda_driver import check_cuda, cuda_context
from .params import Accumulator, Params, check_constants, check_layout, expect_constants

# Both compilers read the kernels as the same C++ dialect.
CXX_STANDARD = "-std=c++20"
HOST_FLAGS = (CXX_STANDARD, "-O3", "-fopenmp", "-shared", "-fPIC", "-x", "c++")
NVRTC_FLAGS = (CXX_STANDARD, "-default-device")
ACCUMULATOR_MB_ENV = "GLRAST_ACCUMULATOR_MB"
DEFAULT_ACCUMULATOR_MB = 256
CUDA_BLOCK = 256

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
_lock = threading.Lock()
_modules: dict[tuple[str, str], object] = {}


expect_constants("*", "triangle_ids", ids.C_CONSTANTS)


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


@functools.cache
def host_compiler() -> tuple[str, str]:
    """(path, version line) of the C++ compiler: $CXX if set (and then only it),
    else the first of c++, g++, clang++ on PATH."""
    wanted = os.environ.get("CXX")
    candidates = [wanted] if wanted else ["c++", "g++", "clang++"]
    path = next((found for found in map(shutil.which, candidates) if found), None)
    if path is None:
        looked = f"$CXX={wanted!r}" if wanted else "c++, g++, clang++ on PATH"
        raise KernelBuildError(
            f"no C++ compiler found (looked for {looked}); CPU tensors need one to build glrast's kernels: "
            "install g++ 10 or newer (Debian/Ubuntu: apt-get install g++) or point $CXX at a C++20 compiler"
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


class _Module:
    """What both builds share: the mirror checks and the function table. Each
    build provides `read_global(symbol, size) -> bytes | None`: the first `size`
    bytes of an exported global (up to its NUL for size None), None if absent."""

    name: str

    def __init__(self) -> None:
        self._checked: set[type] = set()
        self._functions: dict[str, object] = {}
        check_constants(self.name, self.read_global)

    def _check(self, kind: type) -> None:
        """Once per params type: its layout equals the compiled struct's (see params.py)."""
        if not issubclass(kind, Params):
            raise TypeError(f"csrc/{self.name}.cu kernels take a params.Params mirror, got {kind.__name__}")
        check_layout(kind, self.name, self.read_global)
        self._checked.add(kind)


class HostModule(_Module):
    """A host-compiled kernel library; kernels run synchronously under OpenMP."""

    def __init__(self, name: str):
        self.name = name
        self._lib = ctypes.CDLL(str(build_host(name)))
        super().__init__()

    def read_global(self, symbol: str, size: int | None) -> bytes | None:
        try:
            address = ctypes.addressof(ctypes.c_char.in_dll(self._lib, symbol))
        except ValueError:
            return None
        return ctypes.string_at(address) if size is None else ctypes.string_at(address, size)

    def accumulation_slots(self, floats: int) -> int:
        """Slots for an Accumulator of `floats` values: one per OpenMP thread while
        their total stays within the accumulator cap, else 1 (shared, atomic)."""
        threads = self._lib.glrast_num_threads()
        return threads if threads * floats * 4 <= accumulator_cap_bytes() else 1

    def _function(self, kernel: str):
        fn = getattr(self._lib, kernel)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        self._functions[kernel] = fn
        return fn

    def launch(self, kernel: str, params: Params, n: int) -> None:
        if n <= 0:
            return
        if type(params) not in self._checked:
            self._check(type(params))
        fn = self._functions.get(kernel) or self._function(kernel)
        fn(ctypes.addressof(params), n)


# ---------------------------------------------------------------------------
# NVRTC build


@functools.cache
def nvrtc_version() -> str:
    try:
        from cuda.bindings import nvrtc

        major, minor = check_cuda(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except (ImportError, RuntimeError) as e:  # the bindings raise RuntimeError when libnvrtc is missing
        raise KernelBuildError(
            "NVRTC is not available: install cuda-python and nvidia-cuda-nvrtc "
            f"(pip install cuda-python nvidia-cuda-nvrtc) ({e})"
        ) from None
    return f"{major}.{minor}"


@functools.cache
def nvrtc_supported_archs() -> tuple[int, ...]:
    """Compute capabilities (major*10+minor) this NVRTC can emit cubins for, ascending."""
    from cuda.bindings import nvrtc

    nvrtc_version()
    return tuple(int(a) for a in check_cuda(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


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
    """Compile csrc/<name>.cu with NVRTC for sm_<arch>; returns cubin or PTX bytes
    (target "cubin" or "ptx"; PTX is for compute_<arch> and JIT-compiles forward)."""
    if target not in ("cubin", "ptx"):
        raise ValueError(f"build_nvrtc: target must be 'cubin' or 'ptx', got {target!r}")
    from cuda.bindings import nvrtc

    version = nvrtc_version()
    arch_flag = f"--gpu-architecture={'sm' if target == 'cubin' else 'compute'}_{arch}"
    flags = (*NVRTC_FLAGS, arch_flag, f"-I{csrc_dir()}")
    key = _digest(name, "nvrtc", version, target, *flags[:-1])
    final = cache_dir() / "nvrtc" / f"{name}-sm{arch}-{key}.{target}"
    if final.is_file():
        return final.read_bytes()
    source = (csrc_dir() / f"{name}.cu").read_bytes()
    prog = check_cuda(nvrtc.nvrtcCreateProgram(source, f"{name}.cu".encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(flags), [f.encode() for f in flags])
        size = check_cuda(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        check_cuda(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        if int(err) != 0:
            raise KernelBuildError(
                f"NVRTC {version} build of csrc/{name}.cu for {arch_flag} failed ({err!r}):\n"
                f"{log.decode(errors='replace')}"
            )
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
            if target == "cubin"
            else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        size = check_cuda(get_size(prog), "nvrtc get size")
        image = b" " * size
        check_cuda(get(prog, image), "nvrtc get image")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache_dir())
    out = Path(tmp) / final.name
    out.write_bytes(image)
    _publish(tmp, out, final)
    return image


class CudaModule(_Module):
    """An NVRTC-compiled module loaded into torch's primary context on one CUDA device.

    Kernels launch on torch's current stream of that device, so they order with
    torch's own work without synchronization."""

    def __init__(self, name: str, device: torch.device):
        from cuda.bindings import driver

        self.name = name
        self.device = device
        self._driver = driver
        major, minor = torch.cuda.get_device_capability(device)
        self.target, self.arch = select_target(major * 10 + minor, nvrtc_supported_archs())
        image = build_nvrtc(name, self.arch, self.target)
        with cuda_context(device):
            self._module = check_cuda(driver.cuModuleLoadData(image), f"loading csrc/{name}.cu on {device}")
        # Grid-stride kernels: enough blocks to fill the GPU, not one per element.
        self._max_blocks = torch.cuda.get_device_properties(device).multi_processor_count * 32
        super().__init__()

    def read_global(self, symbol: str, size: int | None) -> bytes | None:
        driver = self._driver
        with cuda_context(self.device):
            err, address, nbytes = driver.cuModuleGetGlobal(self._module, symbol.encode())
            if err == driver.CUresult.CUDA_ERROR_NOT_FOUND:
                return None
            check_cuda((err,), f"reading {symbol} of csrc/{self.name}.cu on {self.device}")
            nbytes = nbytes if size is None else min(size, nbytes)
            host = ctypes.create_string_buffer(nbytes)
            check_cuda(
                driver.cuMemcpyDtoH(ctypes.addressof(host), address, nbytes),
                f"reading {symbol} of csrc/{self.name}.cu on {self.device}",
            )
        return host.raw

    def accumulation_slots(self, floats: int) -> int:
        """CUDA kernels accumulate with atomics into a single slot."""
        return 1

    def _function(self, kernel: str):
        fn = check_cuda(self._driver.cuModuleGetFunction(self._module, kernel.encode()), f"{self.name}.{kernel}")
        self._functions[kernel] = fn
        return fn

    def launch(self, kernel: str, params: Params, n: int) -> None:
        """Run `kernel(params, n)` over n elements on torch's current stream (asynchronous)."""
        if n <= 0:
            return
        driver = self._driver
        with cuda_context(self.device):
            if type(params) not in self._checked:
                self._check(type(params))
            fn = self._functions.get(kernel) or self._function(kernel)
            count = ctypes.c_longlong(n)
            # kernelParams: the address of an array of pointers to each argument's value;
            # the driver copies the values during the call, so locals suffice.
            args = (ctypes.c_void_p * 2)(ctypes.addressof(params), ctypes.addressof(count))
            blocks = min((n + CUDA_BLOCK - 1) // CUDA_BLOCK, self._max_blocks)
            stream = torch.cuda.current_stream(self.device).cuda_stream
            check_cuda(
                driver.cuLaunchKernel(fn, blocks, 1, 1, CUDA_BLOCK, 1, 1, 0, stream, ctypes.addressof(args), 0),
                f"launch of {self.name}.{kernel} on {self.device}",
            )


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


def accumulator_cap_bytes() -> int:
    """The most memory one gradient's per-thread copies may take on the host
    (``$GLRAST_ACCUMULATOR_MB``, default 256 MiB); above it the threads share one
    copy and add with atomics, which is slower but needs no extra memory."""
    raw = os.environ.get(ACCUMULATOR_MB_ENV, "")
    try:
        megabytes = float(raw) if raw else DEFAULT_ACCUMULATOR_MB
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ValueError(f"${ACCUMULATOR_MB_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(megabytes * (1 << 20))


def accumulator(
    mod: HostModule | CudaModule, shape: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, Accumulator]:
    """Zeroed float32 slots [count, *shape] on `device` for a gradient of `shape`,
    and their Accumulator; `collect(slots)` gives the gradient after the launch."""
    size = math.prod(shape)
    count = mod.accumulation_slots(size)
    slots = torch.zeros(count, *shape, dtype=torch.float32, device=device)
    return slots, Accumulator(data=slots.data_ptr(), size=size, count=count)


def collect(slots: torch.Tensor) -> torch.Tensor:
    """The gradient held in accumulation slots (their sum), saturated (see `saturate`)."""
    return saturate(slots[0] if slots.shape[0] == 1 else slots.sum(0))


_FLOAT_MAX = torch.finfo(torch.float32).max


def saturate(grad: torch.Tensor | None) -> torch.Tensor | None:
    """Clamp a scattered gradient to the finite floats, in place: the kernels saturate each
    contribution at the largest float (saturate_f32 in csrc/common.h), but a sum of such contributions
    could still overflow to infinity. NaN stays NaN."""
    return None if grad is None else grad.clamp_(-_FLOAT_MAX, _FLOAT_MAX)
