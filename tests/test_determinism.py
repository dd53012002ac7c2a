"""Deterministic gradients (torch.use_deterministic_algorithms(True)): every scatter backward is
bit-identical across thread counts, processes and launches, equals the fast path within float
tolerance and the float64 reference; NaN and saturation behave as in the fast path; with the
flag off the fast path runs unchanged (one launch per backward)."""

import contextlib
import ctypes
import hashlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reference as ref
import torch
from conftest import gpu_test
from scenes import random_scene

import glrast as dr
from glrast import kernels
from glrast.interpolation import _params as interpolate_params

OPS = ["rasterize", "interpolate", "texture", "antialias"]
THREADS = (1, 2, 3)
# Large enough that the host threads share the work (256 chunks), with thousands of terms per
# vertex or texel gradient entry: the fast path's float sums then vary with the thread count.
RES = (256, 256)


@contextlib.contextmanager
def settings(deterministic: bool, threads: int | None = None):
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(deterministic)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])


def texture_inputs(n=2, res=RES, size=64, texels_per_pixel=2.0, seed=0):
    """tex [n, size, size, 3], uv (a rotated plane, `texels_per_pixel` along each axis: by default
    levels 1 and 2 carry the lookups, and the pyramid's gradient reaches tex) and uv_da."""
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(n, size, size, 3, generator=g)
    scale, angle = texels_per_pixel / size, 0.3
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    ys, xs = torch.meshgrid(torch.arange(res[0]) + 0.5, torch.arange(res[1]) + 0.5, indexing="ij")
    uv = torch.stack([c * xs - s * ys, s * xs + c * ys], -1).expand(n, *res, 2).contiguous()
    uv_da = torch.tensor([c, -s, s, c]).expand(n, *res, 4).contiguous()
    return tex, uv, uv_da


def op_grads(op: str, glctx, device, res=RES, grad_scale=1.0, nan_rows=0, signed=True, texels_per_pixel=2.0):
    """(gradients of sum(out * w) to the op's inputs, the same by the float64 reference or None).
    grad_scale multiplies w (|w| for signed=False); nan_rows makes the first rows of w NaN."""
    device = torch.device(device)
    pos, tri = random_scene(num_tris=12, num_images=2, seed=4)
    g = torch.Generator().manual_seed(5)
    attr = torch.randn(pos.shape[1], 4, generator=g)
    inputs = {"rasterize": {"pos": pos}, "interpolate": {"attr": attr}, "antialias": {"pos": pos, "attr": attr}}.get(op)
    if op == "texture":
        tex, uv, uv_da = texture_inputs(res=res, texels_per_pixel=texels_per_pixel)
        inputs = {"tex": tex, "uv": uv}
    live = {k: x.to(device).requires_grad_(True) for k, x in inputs.items()}
    tri_d = tri.to(device)
    rast = rast_db = None
    if op in ("rasterize", "interpolate", "antialias"):
        rast, rast_db = dr.rasterize(glctx, live["pos"] if "pos" in live else pos.to(device), tri_d, res)
    if op == "rasterize":
        outs = [rast[..., :2], rast_db]
    elif op == "interpolate":
        outs = list(dr.interpolate(live["attr"], rast.detach(), tri_d, rast_db.detach(), diff_attrs="all"))
    elif op == "texture":
        outs = [dr.texture(live["tex"], live["uv"], uv_da.to(device), filter_mode="linear-mipmap-linear")]
    else:
        color = dr.interpolate(live["attr"], rast.detach(), tri_d)[0]
        outs = [dr.antialias(color, rast.detach(), live["pos"], tri_d)]
    ws = [torch.randn(o.shape, generator=g) for o in outs]
    ws = [(w if signed else w.abs()) * grad_scale for w in ws]
    if nan_rows:
        ws[0][:, :nan_rows] = math.nan
    loss = sum((o * w.to(device)).sum() for o, w in zip(outs, ws))
    grads = tuple(x.cpu() for x in torch.autograd.grad(loss, list(live.values())))
    return grads, (outs, ws, inputs, tri, rast, rast_db, uv_da if op == "texture" else None)


def reference_grads(op: str, record) -> tuple:
    """The float64 reference's gradients for op_grads' case."""
    outs, ws, inputs, tri, rast, rast_db, uv_da = record
    x = {k: v.double().requires_grad_(True) for k, v in inputs.items()}
    if op == "texture":
        out = ref.texture(x["tex"], x["uv"], uv_da.double(), filter_mode="linear-mipmap-linear")
        loss = (out * ws[0].double()).sum()
    else:
        ids = dr.triangle_index(rast.detach().cpu())
        if op == "rasterize":
            uv, db = ref.barycentrics(x["pos"], tri, ids, x["pos"].shape[1])
            loss = (uv * ws[0].double()).sum() + (db * ws[1].double()).sum()
        elif op == "interpolate":
            uv_f, db_f = rast.detach().cpu()[..., :2].double(), rast_db.detach().cpu().double()
            out, da = ref.interpolate(x["attr"], uv_f, db_f, tri, ids, list(range(x["attr"].shape[1])))
            loss = (out * ws[0].double()).sum() + (da * ws[1].double()).sum()
        else:
            color = ref.interpolate(x["attr"], rast.detach().cpu()[..., :2].double(), None, tri, ids)[0]
            loss = (ref.antialias(color, rast.detach().cpu(), x["pos"], tri) * ws[0].double()).sum()
    return torch.autograd.grad(loss, list(x.values()), allow_unused=True, materialize_grads=True)


def close(actual, expected, tol, what):
    """max |actual - expected| <= tol * max |expected|."""
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert scale > 0 and err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:g} * {scale:.3g}"


def digest(grads) -> str:
    h = hashlib.sha256()
    for g in grads:
        h.update(g.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("op", OPS)
def test_bit_identical_across_thread_counts_and_close_to_the_fast_path(cpu_glctx, op):
    fast = []
    for threads in THREADS:
        with settings(False, threads):
            fast.append(op_grads(op, cpu_glctx, "cpu")[0])
    # The inputs are such that the fast path depends on how the threads split the work: the test
    # below would catch a deterministic mode that fell back to it.
    assert len({digest(g) for g in fast}) > 1, f"{op}: the fast path came out the same for {THREADS} threads"
    det = []
    for threads in THREADS:
        with settings(True, threads):
            det.append(op_grads(op, cpu_glctx, "cpu")[0])
    assert len({digest(g) for g in det}) == 1, f"{op}: deterministic gradients differ across {THREADS} threads"
    with settings(True, 2):
        assert digest(op_grads(op, cpu_glctx, "cpu")[0]) == digest(det[0])  # and from run to run
    for d, f in zip(det[0], fast[0]):
        close(d, f, 1e-5, f"{op}: deterministic vs fast path")


@pytest.mark.parametrize("op", OPS)
def test_deterministic_gradients_match_the_reference(cpu_glctx, op):
    res = (20, 24) if op == "antialias" else (40, 48)  # the antialias reference walks pixels in Python
    with settings(True):
        grads, record = op_grads(op, cpu_glctx, "cpu", res=res)
    for name, got, want in zip(record[2], grads, reference_grads(op, record)):
        tol = 1e-3 if op == "rasterize" else 2e-5
        close(got, want, tol, f"{op}: gradient to {name} vs the float64 reference")


def all_digests() -> str:
    """Digests of every op's deterministic gradients, one line (run in fresh processes)."""
    glctx = dr.RasterizeGLContext(device="cpu")
    with settings(True):
        return " ".join(digest(op_grads(op, glctx, "cpu")[0]) for op in OPS)


def test_bit_identical_across_processes(cpu_glctx):
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_determinism as t; " \
           "print(t.all_digests())"  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        for threads in (2, 3)
    ]  # fmt: skip
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        runs.append(out.split()[-len(OPS) :])
    with settings(True, 1):
        here = [digest(op_grads(op, cpu_glctx, "cpu")[0]) for op in OPS]
    assert runs[0] == runs[1] == here


@pytest.mark.parametrize("op", OPS)
def test_nan_terms_give_nan_entries_as_in_the_fast_path(cpu_glctx, op):
    with settings(False, 2):
        fast = op_grads(op, cpu_glctx, "cpu", res=(64, 64), nan_rows=40)[0]
    with settings(True, 2):
        det = op_grads(op, cpu_glctx, "cpu", res=(64, 64), nan_rows=40)[0]
    assert any(f.isnan().any() for f in fast)
    for d, f in zip(det, fast):
        assert torch.equal(d.isnan(), f.isnan())
        if (~f.isnan()).any():
            close(d[~f.isnan()], f[~f.isnan()], 1e-5, f"{op}: entries without NaN")


def test_sums_beyond_float_saturate_at_the_float_limit(cpu_glctx):
    """Terms near FLT_MAX: the exact sums, beyond float's range for many entries, come out as the
    float64 reference's sums clamped to ±FLT_MAX. (The fast path's float partial sums may overflow
    on the way to a sum within range and then saturate too, depending on the order.)"""
    with settings(True, 2):
        grads, record = op_grads("interpolate", cpu_glctx, "cpu", res=(64, 64), grad_scale=3e37)
    got, want = grads[0], reference_grads("interpolate", record)[0]
    limit = torch.finfo(torch.float32).max
    beyond = want.abs() > limit
    assert beyond.sum() > 10 and (~beyond & (want != 0)).sum() > 10
    assert torch.equal(got[beyond], want[beyond].sign().float() * limit)
    close(got, want.clamp(-limit, limit), 2e-5, "sums near the float limit")


def test_infinite_terms_count_as_the_largest_float(cpu_glctx):
    """texture multiplies the output gradient as it is: an infinite one makes infinite terms, which
    saturate the entries they reach at FLT_MAX in both paths."""
    case = dict(res=(64, 64), grad_scale=math.inf, signed=False, texels_per_pixel=0.5)  # level 0 alone
    with settings(False, 2):
        fast = op_grads("texture", cpu_glctx, "cpu", **case)[0][0]
    with settings(True, 2):
        det = op_grads("texture", cpu_glctx, "cpu", **case)[0][0]
    assert (fast == torch.finfo(torch.float32).max).sum() > 10
    assert torch.equal(det, fast)


class LaunchCounter:
    """Counts the runs of a host kernel (wraps the module's ctypes function)."""

    def __init__(self, monkeypatch, name: str, kernel: str):
        mod = kernels.module(name, torch.device("cpu"))
        fn = mod._functions.get(kernel) or mod._function(kernel)
        self.count = 0

        def counted(*args):
            self.count += 1
            return fn(*args)

        monkeypatch.setitem(mod._functions, kernel, counted)


def test_flag_off_runs_each_scatter_kernel_once(cpu_glctx, monkeypatch):
    counters = {
        k: LaunchCounter(monkeypatch, m, k)
        for m, k in [("raster", "raster_grad"), ("interpolate", "interpolate_bwd"), ("texture", "texture_bwd"),
                     ("antialias", "antialias_grad_pos"), ("antialias", "antialias_grad_color")]
    }  # fmt: skip
    used = {"rasterize": ["raster_grad"], "interpolate": ["interpolate_bwd"], "texture": ["texture_bwd"],
            "antialias": ["interpolate_bwd", "antialias_grad_pos"]}  # fmt: skip
    for deterministic, scatter_runs in [(False, 1), (True, 2)]:
        with settings(deterministic):
            for op in OPS:
                for c in counters.values():
                    c.count = 0
                op_grads(op, cpu_glctx, "cpu", res=(16, 16))
                for k, c in counters.items():
                    runs = scatter_runs if k in used[op] else 0
                    if op == "antialias" and k == "antialias_grad_color":
                        runs = 1  # gathers: never run twice
                    assert c.count == runs, (op, deterministic, k)


@pytest.mark.parametrize("threads", [1, 2])
def test_128_bit_sums_carry_exactly(cpu_glctx, threads):
    """With a recorded peak far below the terms, each term is ~2^59 and the low words overflow
    after a few: the carries into the high words must keep the sums exact (to 2^-59 here)."""
    pos, tri = random_scene(num_tris=1, num_images=1, seed=2)
    pos[0] = torch.tensor([[-3.0, -3.0, 0.0, 1.0], [3.0, -3.0, 0.0, 1.0], [0.0, 3.0, 0.0, 1.0]])  # every pixel
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (64, 64))
    attr = torch.zeros(1, 3, 1)
    grad_out = torch.ones(1, 64, 64, 1)
    grad_rast = torch.empty_like(rast)
    mod = kernels.module("interpolate", torch.device("cpu"))
    sums = torch.zeros(3, 2, dtype=torch.int64)
    peak = torch.full((3,), 2.0**-20).view(torch.int32).clone()
    acc = kernels.Accumulator(data=sums.data_ptr(), peak=peak.data_ptr(), size=3, count=1, mode=kernels.ACC_FIXED)
    params = interpolate_params(attr, rast, None, tri, [], grad_out=grad_out.data_ptr(), grad_attr=acc,
                                grad_rast=grad_rast.data_ptr())  # fmt: skip
    run = mod._functions.get("interpolate_bwd") or mod._function("interpolate_bwd")
    run(ctypes.addressof(params), 64 * 64, threads)  # the FIXED pass alone (launch would begin with PEAK)
    assert (rast[..., 3] > 0).all() and (sums[:, 1] != 0).all()  # the high words took carries
    u, v = rast[0, ..., 0], rast[0, ..., 1]
    expected = torch.stack([t.double().sum() for t in (u, v, 1 - u - v)])  # s in float, as the kernel has it
    got = kernels.FixedSums(mod, sums, peak).value()
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=0)


def test_an_accumulator_serves_one_deterministic_launch(cpu_glctx):
    pos, tri = random_scene(num_tris=2, num_images=1)
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (8, 8))
    attr = torch.rand(1, pos.shape[1], 2)
    grad_out, grad_rast = torch.ones(1, 8, 8, 2), torch.empty_like(rast)
    mod = kernels.module("interpolate", torch.device("cpu"))
    with settings(True):
        storage, acc = kernels.accumulator(mod, attr.shape, attr.device)
    params = interpolate_params(attr, rast, None, tri, [], grad_out=grad_out.data_ptr(), grad_attr=acc,
                                grad_rast=grad_rast.data_ptr())  # fmt: skip
    mod.launch("interpolate_bwd", params, 64)
    assert params.grad_attr.mode == kernels.ACC_FIXED and storage.value().abs().sum() > 0
    with pytest.raises(RuntimeError, match="serves one scatter launch"):
        mod.launch("interpolate_bwd", params, 64)


def test_every_scattering_kernel_is_declared():
    """Kernels that reach accumulate() (directly or through a helper) are GLRAST_SCATTER_KERNELs,
    which deterministic mode runs twice; a kernel missing the declaration would scatter nothing."""
    for path in kernels.csrc_dir().glob("*.cu"):
        text = path.read_text()
        bodies = re.split(r"\n(?=GLRAST_(?:SCATTER_)?KERNEL\(|GLRAST_HD )", text)
        callers = {"accumulate"}
        for _ in range(3):  # helpers calling helpers
            for body in bodies:
                m = re.match(r"GLRAST_HD [\w:<>*& ]+?\b(\w+)\(", body)
                if m and any(re.search(rf"\b{c}\(", body[m.end() :]) for c in callers):
                    callers.add(m.group(1))
        for body in bodies:
            m = re.match(r"GLRAST_(SCATTER_)?KERNEL\((\w+),", body)
            if m:
                scatters = any(re.search(rf"\b{c}\(", body) for c in callers)
                assert scatters == bool(m.group(1)), f"{path.name}: {m.group(2)}"
    assert kernels.module("antialias", torch.device("cpu")).read_global("glrast_scatters_antialias_grad_pos", 4)


@gpu_test
@pytest.mark.parametrize("op", OPS)
def test_cuda_bit_identical_across_launches(op):
    from conftest import shared_context

    glctx = shared_context(torch.device("cuda"))
    with settings(True):
        first, second = (op_grads(op, glctx, "cuda")[0] for _ in range(2))
    with settings(False):
        fast = op_grads(op, glctx, "cuda")[0]
    assert digest(first) == digest(second)
    for d, f in zip(first, fast):
        close(d, f, 1e-5, f"{op}: CUDA deterministic vs fast path")
