"""Kernel runtime: every csrc/*.cu compiles with NVRTC for the supported GPU
generations and as PTX (no GPU needed), architecture selection, the host
build's disk cache (hits, keys, failures, missing compiler, concurrent builds),
and benchmarks/gpu_smoke.py, which compares the two builds op by op."""

import ctypes
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import gpu_test
from tiny_kernel import TINY_HEADER, TinyParams, fill, leftovers

from glrast import ids, kernels, params
from glrast.params import KernelContractError, Params

NVRTC_TARGETS = [("cubin", 75), ("cubin", 80), ("cubin", 90), ("cubin", 120), ("ptx", 75)]
_KERNEL_RE = re.compile(r"GLRAST_KERNEL\(\s*(\w+)")


@pytest.fixture(scope="module")
def fresh_nvrtc_cache(tmp_path_factory):
    """A cache nobody has filled, so every NVRTC build below really compiles."""
    path = tmp_path_factory.mktemp("nvrtc-cache")
    old = os.environ.get("GLRAST_CACHE_DIR")
    os.environ["GLRAST_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["GLRAST_CACHE_DIR"]
    else:
        os.environ["GLRAST_CACHE_DIR"] = old


@pytest.mark.parametrize("target,arch", NVRTC_TARGETS, ids=[f"{t}-sm{a}" for t, a in NVRTC_TARGETS])
@pytest.mark.parametrize("name", kernels.kernel_names())
def test_every_kernel_compiles_with_nvrtc(fresh_nvrtc_cache, name, target, arch):
    image = kernels.build_nvrtc(name, arch, target)
    entries = _KERNEL_RE.findall((kernels.csrc_dir() / f"{name}.cu").read_text())
    assert entries, f"csrc/{name}.cu defines no GLRAST_KERNEL"
    if target == "cubin":
        assert image[:4] == b"\x7fELF"
        for entry in entries:  # extern "C": the symbol is the plain name
            assert entry.encode() in image
    else:
        ptx = image.decode()
        assert f".target sm_{arch}" in ptx
        for entry in entries:
            assert re.search(rf"\.entry\s+{entry}\s*\(", ptx), f"{entry} missing from the PTX"
    assert kernels.build_nvrtc(name, arch, target) == image  # cache hit, same bytes


def test_nvrtc_supported_archs():
    archs = kernels.nvrtc_supported_archs()
    assert list(archs) == sorted(archs)
    assert {75, 80, 90} <= set(archs)
    assert re.fullmatch(r"\d+\.\d+", kernels.nvrtc_version())


@pytest.mark.parametrize(
    "arch,supported,expected",
    [
        (90, (75, 80, 86, 90), ("cubin", 90)),  # known: cubin for exactly this GPU
        (75, (75, 80, 90), ("cubin", 75)),
        (89, (75, 80, 86, 90), ("ptx", 86)),  # unknown in between: newest older PTX, JIT forward
        (130, (75, 90, 120, 121), ("ptx", 121)),  # newer than NVRTC: PTX of its newest
    ],
)
def test_select_target(arch, supported, expected):
    assert kernels.select_target(arch, supported) == expected


def test_select_target_too_old_gpu():
    with pytest.raises(kernels.KernelBuildError, match=r"sm_61 is older than every architecture.*sm_75"):
        kernels.select_target(61, (75, 80, 90))


def test_build_nvrtc_rejects_unknown_target():
    with pytest.raises(ValueError, match="target must be 'cubin' or 'ptx'"):
        kernels.build_nvrtc("raster", 75, "fatbin")


# ---------------------------------------------------------------------------
# The host build's cache, on the tiny kernel tree (tests/tiny_kernel.py, fixture tiny_tree)


def test_host_cache_hit_reuses_artifact(tiny_tree, monkeypatch):
    _, cache = tiny_tree
    first = kernels.build_host("tiny")
    stamp = first.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran on a cache hit")

    monkeypatch.setattr(kernels.subprocess, "run", no_compiler)
    assert kernels.build_host("tiny") == first
    assert first.stat().st_mtime_ns == stamp
    assert fill(kernels.HostModule("tiny")) == [7.0] * 5
    assert leftovers(cache) == []


def test_host_cache_key_follows_headers(tiny_tree):
    csrc, _ = tiny_tree
    before = kernels.build_host("tiny")
    (csrc / "tiny.h").write_text(TINY_HEADER.replace("7.0f", "9.0f"))
    after = kernels.build_host("tiny")
    assert after != before
    assert before.is_file() and after.is_file()
    out = (ctypes.c_float * 3)()
    lib = ctypes.CDLL(str(after))
    lib.tiny_fill(ctypes.byref(TinyParams(out=ctypes.addressof(out))), ctypes.c_longlong(3), 1)
    assert list(out) == [9.0] * 3


def test_host_cache_key_follows_flags(tiny_tree, monkeypatch):
    plain = kernels.build_host("tiny")
    monkeypatch.setenv("GLRAST_HOST_CFLAGS", "-DUNUSED_FLAG=1")
    assert kernels.build_host("tiny") != plain


def test_failed_host_build_raises_with_log(tiny_tree):
    csrc, cache = tiny_tree
    (csrc / "broken.cu").write_text('#include "tiny.h"\nextern "C" void f() { this is not C++; }\n')
    with pytest.raises(kernels.KernelBuildError) as info:
        kernels.build_host("broken")
    message = str(info.value)
    assert "csrc/broken.cu failed" in message
    assert "broken.cu:2" in message and "error" in message  # the compiler's own diagnostic
    assert leftovers(cache) == []
    assert not list(cache.rglob("broken*"))


def test_failed_nvrtc_build_raises_with_log(tiny_tree):
    csrc, _ = tiny_tree
    (csrc / "broken.cu").write_text('extern "C" __global__ void f() { undefined_symbol_here(); }\n')
    with pytest.raises(
        kernels.KernelBuildError,
        match=r"(?s)csrc/broken\.cu for --gpu-architecture=sm_75.*"
        r"undefined_symbol_here",
    ):
        kernels.build_nvrtc("broken", 75)


@pytest.fixture
def compiler_lookup_reset():
    kernels.host_compiler.cache_clear()
    yield
    kernels.host_compiler.cache_clear()


def test_missing_explicit_compiler(monkeypatch, compiler_lookup_reset):
    monkeypatch.setenv("CXX", "/nonexistent/bin/c++")
    with pytest.raises(kernels.KernelBuildError, match=r"\$CXX='/nonexistent/bin/c\+\+'.*install g\+\+"):
        kernels.host_compiler()


def test_no_compiler_on_path(monkeypatch, tmp_path, compiler_lookup_reset):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kernels.KernelBuildError, match=r"c\+\+, g\+\+, clang\+\+ on PATH.*apt-get install g\+\+"):
        kernels.host_compiler()


_CONCURRENT = """
import sys
import textwrap
from pathlib import Path
from glrast import kernels
kernels.csrc_dir = lambda: Path(sys.argv[1])
print(kernels.build_host("tiny"))
"""


def test_concurrent_host_builds(tiny_tree):
    csrc, cache = tiny_tree
    env = {**os.environ, "GLRAST_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(csrc)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert [p.name for p in (cache / "host").iterdir()] == [Path(paths.pop()).name]
    assert leftovers(cache) == []


# ---------------------------------------------------------------------------
# The GPU smoke script: every op forward + backward on a device against the CPU build.

SMOKE = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_smoke.py"
SMOKE_OPS = ("rasterize", "depth peeling, layer 2", "interpolate", "texture", "texture (cube)", "antialias")


def _smoke(device: str) -> str:
    cmd = [sys.executable, str(SMOKE), "--device", device, "--res", "32", "--runs", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split(" | ")[0].lstrip("| ").split(" (same")[0] for line in res.stdout.splitlines() if "| " in line}
    assert set(SMOKE_OPS) <= rows, res.stdout
    return res.stdout


def test_gpu_smoke_script_runs_cpu_against_cpu():
    out = _smoke("cpu")
    assert "same triangle at 100.00% of pixels" in out  # one GL driver: identical coverage
    assert "FAILED" not in out


@gpu_test
def test_gpu_smoke_script_cuda_matches_cpu_build():
    assert "FAILED" not in _smoke("cuda")


def test_gpu_smoke_script_without_cuda_says_so():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU for the script, on any machine
    res = subprocess.run([sys.executable, str(SMOKE)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "CUDA is not available" in res.stdout, res.stdout + res.stderr


# ---------------------------------------------------------------------------
# The Python/C contract: params mirrors and shared constants are checked at load.

TWO_FIELDS_SOURCE = textwrap.dedent(
    """
    #include "common.h"
    struct PairParams { float* out; int count; float scale; };
    GLRAST_LAYOUT(PairParams, out, count, scale)
    enum { MODE_A = 3, MODE_B = 5 };
    GLRAST_CONSTANTS(pair_modes, MODE_A, MODE_B)
    GLRAST_KERNEL(pair_fill, PairParams) { if (i < p.count) p.out[i] = p.scale; }
    """
)


def _pair_module(tiny_tree):
    csrc, _ = tiny_tree
    (csrc / "pair.cu").write_text(TWO_FIELDS_SOURCE)
    return kernels.HostModule("pair")


def _mirror(*fields):
    return type("PairParams", (Params,), {"_fields_": list(fields)})


def test_matching_mirror_launches(tiny_tree):
    mod = _pair_module(tiny_tree)
    out = torch.zeros(4)
    mirror = _mirror(("out", ctypes.c_void_p), ("count", ctypes.c_int), ("scale", ctypes.c_float))
    mod.launch("pair_fill", mirror(out=out.data_ptr(), count=3, scale=2.5), 4)
    assert out.tolist() == [2.5, 2.5, 2.5, 0.0]


@pytest.mark.parametrize(
    "fields,message",
    [
        ((("out", ctypes.c_void_p), ("cnt", ctypes.c_int), ("scale", ctypes.c_float)),
         r"PairParams field 1: csrc/pair\.cu has 'count' where the Python mirror .* has 'cnt'"),
        ((("out", ctypes.c_void_p), ("count", ctypes.c_longlong), ("scale", ctypes.c_float)),
         r"PairParams\.scale is at byte 12 in csrc/pair\.cu but at byte 16"),
        ((("out", ctypes.c_void_p), ("count", ctypes.c_int), ("scale", ctypes.c_float * 3)),
         r"sizeof\(PairParams\) is 16 bytes in csrc/pair\.cu but 24 .* \(scale\) differs"),
        ((("out", ctypes.c_void_p), ("count", ctypes.c_int)),
         r"csrc/pair\.cu lists 3 fields \(out, count, scale\) but the Python mirror .* has 2 \(out, count\)"),
    ],
    ids=["renamed", "wrong-type-before", "wrong-type-last", "missing"],
)  # fmt: skip
def test_mismatched_mirror_fails_naming_the_field(tiny_tree, fields, message):
    mod = _pair_module(tiny_tree)
    mirror = _mirror(*fields)
    with pytest.raises(KernelContractError, match=message):
        mod.launch("pair_fill", mirror(out=None), 4)


def test_struct_without_exported_layout_fails(tiny_tree):
    mod = _pair_module(tiny_tree)
    unknown = type("OtherParams", (Params,), {"_fields_": [("out", ctypes.c_void_p)]})
    with pytest.raises(KernelContractError, match=r"exports no layout for struct OtherParams.*GLRAST_LAYOUT"):
        mod.launch("pair_fill", unknown(out=None), 1)


def test_unknown_field_name_is_rejected():
    mirror = _mirror(("out", ctypes.c_void_p), ("count", ctypes.c_int))
    with pytest.raises(AttributeError, match="'PairParams' object has no attribute 'cuont'"):
        mirror(out=None, cuont=3)
    params = mirror(count=1)
    with pytest.raises(AttributeError, match="no attribute 'scale'"):
        params.scale = 2.0
    plain = type("PairParams", (ctypes.Structure,), {"_fields_": mirror._fields_})
    plain(cuont=3)  # what the check prevents: a plain structure keeps the typo and the kernel reads 0


def test_constants_are_checked_at_load(tiny_tree, monkeypatch):
    monkeypatch.setattr(params, "_EXPECTED_CONSTANTS", {**params._EXPECTED_CONSTANTS})
    params.expect_constants("pair", "pair_modes", {"MODE_A": 3, "MODE_B": 5})
    _pair_module(tiny_tree)
    params.expect_constants("pair", "pair_modes", {"MODE_A": 3, "MODE_B": 6})
    with pytest.raises(KernelContractError, match=r"MODE_B is 5 in csrc/pair\.cu but 6 in Python"):
        kernels.HostModule("pair")
    params.expect_constants("pair", "pair_modes", {"MODE_C": 1})
    with pytest.raises(KernelContractError, match=r"does not export MODE_C"):
        kernels.HostModule("pair")


@pytest.mark.parametrize("name", kernels.kernel_names())
def test_every_module_exports_what_python_mirrors(name):
    """Each shipped module loads (its constants checked) and exports the triangle-id encoding
    with the values of glrast/ids.py."""
    mod = kernels.module(name, torch.device("cpu"))
    exported = mod.read_global("glrast_constant_names_triangle_ids", None).decode()
    values = struct.unpack("<3q", mod.read_global("glrast_constants_triangle_ids", 24))
    assert dict(zip((n.strip() for n in exported.split(",")), values)) == ids.C_CONSTANTS


def test_every_params_mirror_matches_its_struct():
    """Every params mirror in glrast against the layout its .cu exports (host build)."""
    from glrast import antialiasing, interpolation, pipeline, raster, texturing

    mirrors = {
        "raster": [raster.RasterParams, pipeline.CornerParams],
        "interpolate": [interpolation.InterpolateParams],
        "texture": [texturing.TextureParams, texturing.MipParams],
        "antialias": [antialiasing.HashParams, antialiasing.AntialiasParams],
    }
    assert sorted(mirrors) == kernels.kernel_names()
    for name, kinds in mirrors.items():
        mod = kernels.module(name, torch.device("cpu"))
        for kind in [*kinds, params.FixedParams]:  # FixedParams: common.h's, in every module
            params.check_layout(kind, name, mod.read_global)


def test_shared_constants_agree():
    """Triangle ids: Python's encoding and the shader's generated defines (the kernels' copy is
    compared in test_every_module_exports_what_python_mirrors)."""
    # continuous at 2^24: both encodings of id + 1 = 2^24 are the same float
    assert ids.BITS_BASE + ids.EXACT_MAX == struct.unpack("<I", struct.pack("<f", float(ids.EXACT_MAX)))[0]
    assert ids.BITS_BASE + ids.LIMIT == struct.unpack("<I", struct.pack("<f", 3.4028234663852886e38))[0]
    defines = ids.glsl_defines()
    assert f"#define ID_EXACT_MAX {ids.EXACT_MAX}.0" in defines
    assert f"#define ID_BITS_BASE {ids.BITS_BASE:#x}u" in defines
    shader = (Path(kernels.csrc_dir()).parent / "shaders" / "rasterize.frag").read_text()
    assert "ID_EXACT_MAX" in shader and "ID_BITS_BASE" in shader
    assert not re.search(r"16777216|4A800000", shader, re.IGNORECASE)  # derived, not written out


def test_one_scatter_path():
    """Kernels scatter gradients only through the Accumulator (common.h's accumulate)."""
    for path in kernels.csrc_dir().glob("*.cu"):
        assert "atomic_add_f32" not in path.read_text(), f"{path.name} scatters with a raw atomic add"
