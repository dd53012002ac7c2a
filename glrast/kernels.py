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
architecture. Builds run in a private folder (``.build-*``) and are moved into
place with ``os.replace``, so concurrent processes never block on a lock and an
interrupted build leaves nothing half-written in place. The file's name also
carries a hash of its bytes: an artifact is loaded only after its bytes match
it, so a truncated, emptied or replaced file is rebuilt instead of crashing the
loader. A build folder holds a lock for its lifetime; one whose process has died
is removed by the next build. A cache directory that cannot be written falls
back, with one warning, to a private temporary one for the process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ._log import logger
from ._resources import resource_dir
from ._version import __version__

ACCUMULATOR_BYTES = 1 << 28  # per-thread gradient copies, host build (see Accumulator in common.h)
HOST_FLAGS = ("-std=c++20", "-O3", "-pthread", "-shared", "-fPIC", "-x", "c++")
NVRTC_FLAGS = ("-std=c++17", "-default-device")
CUDA_BLOCK = 256
CACHE_ENV = "GLRAST_CACHE_DIR"
BUILD_PREFIX = ".build-"
STALE_BUILD_S = 60  # a build folder this old whose lock is free belongs to a dead process

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
_lock = threading.Lock()
_modules: dict[tuple[str, str], object] = {}


class KernelBuildError(RuntimeError):
    """A kernel failed to compile; the message holds the compiler's log."""


def csrc_dir() -> Path:
    return resource_dir("csrc")


def cache_dir() -> Path:
    """The configured cache: $GLRAST_CACHE_DIR, default ~/.cache/glrast."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "glrast"
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


# ---------------------------------------------------------------------------
# The disk cache

_private_caches: dict[str, Path] = {}  # configured cache dir -> this process's replacement


def _content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _cache_roots() -> list[Path]:
    """Where artifacts are looked up: the configured cache, then this process's private one."""
    root = cache_dir()
    private = _private_caches.get(str(root))
    return [root] if private is None else [root, private]


def _cached(subdir: str, stem: str, suffix: str) -> tuple[Path, bytes] | None:
    """A verified artifact `<stem>-<hash of its bytes><suffix>` and its bytes, or None.
    Files whose bytes do not match their name (truncated, emptied, overwritten) are
    removed where the cache is writable, and never loaded."""
    for root in _cache_roots():
        for path in sorted((root / subdir).glob(f"{stem}-*{suffix}")):
            try:
                data = path.read_bytes()
            except OSError:
                continue  # removed meanwhile, or unreadable
            if path.name == f"{stem}-{_content_hash(data)}{suffix}":
                return path, data
            logger.warning("glrast: kernel cache file %s is corrupt (its bytes do not match its name); rebuilding",
                           path)
            with contextlib.suppress(OSError):
                path.unlink()
    return None


def _private_cache(root: Path, error: OSError) -> Path:
    """This process's temporary cache in place of `root` (created once, with a warning)."""
    private = _private_caches.get(str(root))
    if private is None:
        private = Path(tempfile.mkdtemp(prefix="glrast-cache-"))
        atexit.register(_remove_private_cache, private, os.getpid())
        logger.warning(
            "glrast: the kernel cache %s (%s) is not a writable directory (%s); this process builds into %s "
            "instead (set %s to a writable directory to keep the kernels between runs)",
            root, CACHE_ENV, error.strerror or error, private, CACHE_ENV,
        )  # fmt: skip
        _private_caches[str(root)] = private
    return private


def _remove_private_cache(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child, whose parent still uses it
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(root: Path) -> None:
    """Build folders left by processes that died mid-build (SIGKILL, power loss). A live
    build holds an exclusive lock on its folder, which the kernel drops when the process
    ends; a folder is removed only when older than STALE_BUILD_S and its lock is free."""
    now = time.time()
    for folder in root.glob(f"{BUILD_PREFIX}*"):
        try:
            if now - folder.stat().st_mtime < STALE_BUILD_S:
                continue
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # locked: a live build
        finally:
            os.close(fd)


@contextlib.contextmanager
def _build_folder(name: str) -> Iterator[tuple[Path, Path]]:
    """(cache root, a private build folder in it), the folder locked while the build runs
    and removed after. Falls back to this process's private cache when the configured one
    cannot be written."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{name}-", dir=root))
    except OSError as e:
        root = _private_cache(root, e)
        folder = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{name}-", dir=root))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_stale_builds(root)
        yield root, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def _publish(built: Path, root: Path, subdir: str, stem: str, suffix: str) -> Path:
    """Move a finished build into the cache as `<stem>-<hash of its bytes><suffix>`."""
    final = root / subdir / f"{stem}-{_content_hash(built.read_bytes())}{suffix}"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, final)
    return final


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
            "install g++ 11 or newer (Debian/Ubuntu: apt-get install g++) or point $CXX at a C++20 compiler"
        )
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return path, (out.stdout.splitlines() or ["unknown"])[0]


def _extra_host_flags() -> tuple[str, ...]:
    return tuple(os.environ.get("GLRAST_HOST_CFLAGS", "").split())


def build_host(name: str) -> Path:
    """Compile csrc/<name>.cu with the host compiler; returns the cached .so path."""
    compiler, version = host_compiler()
    flags = HOST_FLAGS + _extra_host_flags()
    stem = f"{name}-{_digest(name, 'host', version, *flags)}"
    hit = _cached("host", stem, ".so")
    if hit is not None:
        return hit[0]
    with _build_folder(name) as (root, folder):
        out = folder / f"{name}.so"
        cmd = [compiler, *flags, str(csrc_dir() / f"{name}.cu"), "-I", str(csrc_dir()), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise KernelBuildError(f"host build of csrc/{name}.cu failed:\n$ {' '.join(cmd)}\n{res.stderr}")
        return _publish(out, root, "host", stem, ".so")


class HostModule:
    """A host-compiled kernel library; kernels run synchronously on its thread pool
    (csrc/common.h, glrast_host) with as many threads as torch uses (torch.get_num_threads())."""

    def __init__(self, name: str):
        self.name = name
        path = build_host(name)
        try:
            self._lib = ctypes.CDLL(str(path))
        except OSError as e:  # verified bytes that still do not load (e.g. a missing runtime library)
            raise KernelBuildError(f"cannot load the host build of csrc/{name}.cu ({path}): {e}") from None

    @staticmethod
    def threads() -> int:
        """Threads per launch: torch's intra-op thread count, so that glrast's kernels and
        torch's ops never run more threads than torch was told to (torch.set_num_threads,
        OMP_NUM_THREADS; 1 in DataLoader workers)."""
        return max(1, torch.get_num_threads())

    def accumulation_slots(self, floats: int) -> int:
        """Slots for an Accumulator of `floats` values: one per launch thread while
        their total stays within ACCUMULATOR_BYTES, else 1 (shared, atomic)."""
        threads = self.threads()
        return threads if threads * floats * 4 <= ACCUMULATOR_BYTES else 1

    def launch(self, kernel: str, params: ctypes.Structure, n: int) -> None:
        if n <= 0:
            return
        fn = getattr(self._lib, kernel)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int]
        fn(ctypes.addressof(params), n, self.threads())


# ---------------------------------------------------------------------------
# CUDA driver plumbing (shared with interop.py)

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
    stem = f"{name}-sm{arch}-{_digest(name, 'nvrtc', version, target, *flags[:-1])}"
    hit = _cached("nvrtc", stem, f".{target}")
    if hit is not None:
        return hit[1]
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
    with _build_folder(name) as (root, folder):
        out = folder / f"{name}.{target}"
        out.write_bytes(image)
        _publish(out, root, "nvrtc", stem, f".{target}")
    return image


class CudaModule:
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
        self._functions: dict[str, object] = {}
        # Grid-stride kernels: enough blocks to fill the GPU, not one per element.
        self._max_blocks = torch.cuda.get_device_properties(device).multi_processor_count * 32

    def accumulation_slots(self, floats: int) -> int:
        """CUDA kernels accumulate with atomics into a single slot."""
        return 1

    def launch(self, kernel: str, params: ctypes.Structure, n: int) -> None:
        """Run `kernel(params, n)` over n elements on torch's current stream (asynchronous)."""
        if n <= 0:
            return
        driver = self._driver
        with cuda_context(self.device):
            fn = self._functions.get(kernel)
            if fn is None:
                fn = check_cuda(driver.cuModuleGetFunction(self._module, kernel.encode()), f"{self.name}.{kernel}")
                self._functions[kernel] = fn
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


def ptr(t: torch.Tensor | None) -> int | None:
    """Data pointer for a kernel parameter (None for an absent optional tensor)."""
    return None if t is None else t.data_ptr()


class Accumulator(ctypes.Structure):
    """Mirror of `Accumulator` in csrc/common.h: a gradient buffer for scatter-adds."""

    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_longlong), ("count", ctypes.c_int)]


def accumulator(mod: HostModule | CudaModule, like: torch.Tensor) -> tuple[torch.Tensor, Accumulator]:
    """Zeroed slots [count, *like.shape] for a gradient shaped like `like`, and their
    Accumulator; `collect(slots)` gives the gradient after the launch."""
    count = mod.accumulation_slots(like.numel())
    slots = torch.zeros(count, *like.shape, dtype=torch.float32, device=like.device)
    return slots, Accumulator(slots.data_ptr(), like.numel(), count)


def collect(slots: torch.Tensor) -> torch.Tensor:
    """The gradient held in accumulation slots (their sum)."""
    return slots[0] if slots.shape[0] == 1 else slots.sum(0)
