"""The primitives as torch.library custom ops (glrast/ops.py): opcheck on every op, torch.compile
with fullgraph=True and no graph breaks, compiled = eager, the eager shortcut = the dispatcher,
data checks without graph breaks, higher-order gradients, low-precision dtypes and autocast."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reference as ref
import torch
from conftest import DEVICES, shared_context

import glrast as dr
from glrast import antialiasing, camera, interpolation, mesh, ops, raster, texturing

RES = 16
ROOT = Path(__file__).resolve().parent.parent


class Scene:
    """The standard job at a small size (icosphere, camera at (0, 0, 3), 45°), with a texture:
    `loss` runs rasterize -> interpolate -> texture -> antialias -> MSE."""

    def __init__(self, device, level=1):
        g = torch.Generator().manual_seed(0)
        verts, self.tri = mesh.icosphere(level)
        self.mvp = (camera.perspective(45.0, 1.0, 0.1, 10.0) @ camera.look_at([0, 0, 3.0], [0, 0, 0.0])).to(device)
        self.tri = self.tri.to(device)
        self.uvs = ((verts[:, :2] + 1) / 2).to(device)
        self.verts = verts.to(device).requires_grad_(True)
        self.colors = torch.rand(verts.shape[0], 3, generator=g).to(device).requires_grad_(True)
        self.tex = torch.rand(1, 8, 8, 3, generator=g).to(device).requires_grad_(True)
        self.target = torch.rand(1, RES, RES, 3, generator=g).to(device)
        self.topology = dr.antialias_construct_topology_hash(self.tri)
        self.glctx = shared_context(torch.device(device))

    @property
    def leaves(self):
        return self.verts, self.colors, self.tex

    def loss(self, verts, colors, tex):
        pos = (torch.cat([verts, torch.ones_like(verts[:, :1])], 1) @ self.mvp.T)[None]
        rast, rast_db = dr.rasterize(self.glctx, pos, self.tri, (RES, RES))
        color, _ = dr.interpolate(colors, rast, self.tri)
        uv, uv_da = dr.interpolate(self.uvs, rast, self.tri, rast_db, diff_attrs="all")
        texel = dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear")
        image = dr.antialias(color * texel, rast, pos, self.tri, topology_hash=self.topology)
        return (image - self.target).square().mean()

    def loss_and_grads(self, fn):
        loss = fn(*self.leaves)
        return [loss.detach(), *torch.autograd.grad(loss, self.leaves)]


@pytest.fixture(params=DEVICES)
def scene(request):
    return Scene(request.param)


# ---------------------------------------------------------------------------
# opcheck: schema, fake vs real, autograd registration, AOT dispatch with dynamic shapes


def _op_cases(device):
    """(op, args) for every glrast op, on small real inputs."""
    s = Scene(device, level=0)
    pos = (torch.cat([s.verts, torch.ones_like(s.verts[:, :1])], 1) @ s.mvp.T)[None].detach().requires_grad_(True)
    tri, handle = s.tri, s.glctx.handle
    rast, rast_db = dr.rasterize(s.glctx, pos, tri, (8, 8))
    rast, rast_db = rast.detach(), rast_db.detach()
    attr = s.colors.detach()[None].requires_grad_(True)
    g = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device)

    uv, uv_da = (t.detach() for t in dr.interpolate(s.uvs, rast, tri, rast_db, diff_attrs="all"))
    tex = s.tex.detach().requires_grad_(True)
    pyr = texturing.texture_mip(tex.detach(), 3)
    mip = texturing._FILTERS["linear-mipmap-linear"]
    keys, tris = antialiasing.antialias_hash(tri)
    color = rand(1, 8, 8, 3).requires_grad_(True)
    _, alpha, edge = antialiasing.antialias_op(color, rast, pos, tri, tri, keys, tris, 1.0)
    return {
        "rasterize": (raster.rasterize_op, (pos, tri, None, handle, 8, 8, True, None)),
        "rasterize (peel)": (raster.rasterize_op, (pos, tri, None, handle, 8, 8, True, rast)),
        # ops without a derivative of their own get inputs that do not require grad
        "rasterize_backward": (
            raster.rasterize_backward, (pos.detach(), tri, rast, rand(1, 8, 8, 4), rand(1, 8, 8, 4))
        ),
        "interpolate": (interpolation.interpolate_op, (attr, rast, rast_db, tri, [0, 2])),
        "interpolate_backward": (
            interpolation.interpolate_backward,
            (attr, rast, rast_db, tri, [0, 2], rand(1, 8, 8, 3).requires_grad_(True), rand(1, 8, 8, 4),
             [True, True, True]),
        ),
        "texture": (texturing.texture_op, (tex, pyr, uv, uv_da, None, mip, 0, 3, True)),
        "texture_backward": (
            texturing.texture_backward,
            # the derivative exists for grad_tex only (texture is linear in tex, not in uv)
            (tex, pyr, uv, uv_da, None, rand(1, 8, 8, 3).requires_grad_(True), mip, 0, 3, True,
             [True, False, False, False, False]),
        ),  # fmt: skip
        "texture_mip": (texturing.texture_mip, (tex, 3)),
        "texture_mip_backward": (texturing.texture_mip_backward, (rand(pyr.numel()), list(tex.shape), 3)),
        "antialias_hash": (antialiasing.antialias_hash, (tri,)),
        "antialias": (antialiasing.antialias_op, (color, rast, pos, tri, tri, keys, tris, 1.0)),
        "antialias_backward": (
            antialiasing.antialias_backward,
            (color.detach(), pos.detach(), tri, keys, tris, alpha, edge, rand(1, 8, 8, 3), 1.0, True, True),
        ),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_every_op(device):
    cases = _op_cases(device)
    registered = {name for name in dir(torch.ops.glrast) if not name.startswith("_")}
    assert {op.name for op, _ in cases.values()} == registered - {"name"}
    for name, (op, args) in cases.items():
        if name == "antialias_hash":
            # parallel threads insert the entries of one edge in any order (the set is the same), and the
            # AOT test compares whole tensors between runs: on one host thread the order is fixed, on CUDA not
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                utils = {"test_utils": ("test_schema", "test_autograd_registration", "test_faketensor")}
                result = torch.library.opcheck(op.overload, args, **(utils if device == "cuda" else {}))
            finally:
                torch.set_num_threads(threads)
        else:
            result = torch.library.opcheck(op.overload, args)
        assert set(result.values()) == {"SUCCESS"}, (name, result)


# ---------------------------------------------------------------------------
# torch.compile


def test_explain_reports_no_graph_breaks(scene):
    explained = torch._dynamo.explain(scene.loss)(*scene.leaves)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_export_holds_the_glrast_ops_and_runs_as_eager(scene):
    """torch.export traces the whole step with fake tensors: its graph holds glrast's ops, and the
    exported program computes the eager loss exactly."""

    class Step(torch.nn.Module):
        def forward(self, verts, colors, tex):
            return scene.loss(verts, colors, tex)

    leaves = [t.detach() for t in scene.leaves]
    exported = torch.export.export(Step(), tuple(leaves))
    ops_in_graph = {str(n.target) for n in exported.graph.nodes if str(n.target).startswith("glrast.")}
    assert {"glrast.rasterize.default", "glrast.interpolate.default", "glrast.texture.default",
            "glrast.antialias.default"} <= ops_in_graph  # fmt: skip
    assert torch.equal(exported.module()(*leaves), scene.loss(*leaves))


def test_compiled_step_equals_eager(scene):
    """fullgraph=True over the whole step, through AOT autograd (backend aot_eager: the graphs glrast's ops
    end up in, without inductor's code generation, which the README's example in
    test_readme_compiled_training_step runs). The ops run the same kernels: values and gradients equal
    exactly."""
    compiled = torch.compile(scene.loss, fullgraph=True, backend="aot_eager")
    for got, want in zip(scene.loss_and_grads(compiled), scene.loss_and_grads(scene.loss)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_eager_path_equals_the_dispatcher(scene, monkeypatch):
    """The eager shortcut (ops.Op.__call__) runs what torch.ops.glrast.* runs: bit-identical."""
    eager = scene.loss_and_grads(scene.loss)
    monkeypatch.setattr(ops, "dispatch_always", True)
    for got, want in zip(scene.loss_and_grads(scene.loss), eager):
        assert torch.equal(got, want)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bad_triangle_index_raises_from_the_op(compiled):
    """The index check reads tri, so it runs in the op: eager it raises at the call as before;
    under torch.compile it costs no graph break and raises when the graph runs."""
    s = Scene("cpu", level=0)
    bad = s.tri.clone()
    bad[3, 1] = 12  # the level-0 icosphere has 12 vertices

    def render(tri):
        pos = (torch.cat([s.verts, torch.ones_like(s.verts[:, :1])], 1) @ s.mvp.T)[None]
        return dr.rasterize(s.glctx, pos, tri, (8, 8))[0]

    fn = torch.compile(render, fullgraph=True, backend="eager") if compiled else render
    assert fn(s.tri).shape == (1, 8, 8, 4)
    with pytest.raises(ValueError, match=r"rasterize: tri holds vertex index 12, outside \[0, 12\) \(pos has 12"):
        fn(bad)


@pytest.mark.parametrize("device", DEVICES)
def test_index_range_is_read_again_after_a_write(device):
    """On CUDA the index range is remembered per tri tensor (no synchronisation per call); an in-place
    write changes the tensor's version, and the range is read again."""
    attr = torch.zeros(4, 3, device=device)
    rast = torch.zeros(1, 2, 2, 4, device=device)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device=device)
    for _ in range(2):
        dr.interpolate(attr, rast, tri)
    tri[0, 2] = 4
    with pytest.raises(ValueError, match=r"interpolate: tri holds vertex index 4, outside \[0, 4\)"):
        dr.interpolate(attr, rast, tri)
    tri[0, 2] = 3
    assert dr.interpolate(attr, rast, tri)[0].shape == (1, 2, 2, 3)


def test_readme_compiled_training_step(tmp_path):
    """The README's torch.compile example runs as printed (inductor, fullgraph=True), prints nothing
    but its own lines (no warnings in the default logging configuration), and lowers the loss. With a
    private compile cache: a cached backward graph of an earlier glrast would be reused (torch's key
    covers the forward graph, not the backward ops' schemas)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## torch.compile") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    losses = [float(line.split()[-1]) for line in res.stdout.splitlines()]
    assert len(losses) == 3 and losses[2] < losses[0]


# ---------------------------------------------------------------------------
# Higher-order gradients


def _interpolate_scene(device, requires_rast_grad=False):
    s = Scene(device, level=1)
    pos = (torch.cat([s.verts, torch.ones_like(s.verts[:, :1])], 1) @ s.mvp.T)[None]
    rast, rast_db = dr.rasterize(s.glctx, pos if requires_rast_grad else pos.detach(), s.tri, (8, 8))
    return s, rast, rast_db


FLOAT32_GRADCHECK = pytest.mark.filterwarnings("ignore:Input #.* is not a double precision:UserWarning")


@FLOAT32_GRADCHECK
@pytest.mark.parametrize("device", DEVICES)
def test_interpolate_gradgradcheck(device):
    """interpolate has every second derivative (attr, rast's u and v, rast_db): float32 with finite-difference
    steps of 1e-2 (the kernels have no float64; the op is bilinear, so the differences are exact up to rounding)."""
    s, rast, rast_db = _interpolate_scene(device)
    g = torch.Generator().manual_seed(2)
    attr = torch.rand(s.uvs.shape[0], 3, generator=g).to(device).requires_grad_(True)
    uv = rast[..., :2].detach().requires_grad_(True)  # z/w and the id channel have no derivative
    rast_db = rast_db.detach().requires_grad_(True)

    def fn(attr, uv, rast_db):
        out, out_da = dr.interpolate(attr, torch.cat([uv, rast[..., 2:]], -1), s.tri, rast_db, diff_attrs=[0, 2])
        return out, out_da

    assert torch.autograd.gradgradcheck(fn, (attr, uv, rast_db), eps=1e-2, atol=2e-3, rtol=1e-3)


@FLOAT32_GRADCHECK
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_texture_gradgradcheck(device, filter_mode):
    """texture is linear in tex (through its pyramid): second derivatives through tex and grad_out."""
    s, rast, rast_db = _interpolate_scene(device)
    uv, uv_da = dr.interpolate(s.uvs, rast, s.tri, rast_db, diff_attrs="all")
    tex = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(3)).to(device).requires_grad_(True)

    def fn(tex):
        return dr.texture(tex, uv, uv_da, filter_mode=filter_mode)

    assert torch.autograd.gradgradcheck(fn, (tex,), eps=1e-2, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_penalty_matches_plain_torch(device):
    """A gradient penalty through interpolate: d/d attr |d loss / d attr|^2 against the reference's plain
    torch interpolate (before the ops layer, glrast returned a gradient without a graph: 0)."""
    s, rast, rast_db = _interpolate_scene(device)
    attr0 = torch.rand(s.uvs.shape[0], 3, generator=torch.Generator().manual_seed(4)).to(device)
    uv, tri_id = rast[..., :2].cpu().double(), ref.decode_triangle_id(rast.cpu())

    def penalty_grad(interp, attr):
        attr = attr.clone().requires_grad_(True)
        loss = interp(attr).square().sin().sum()
        (g,) = torch.autograd.grad(loss, attr, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), attr)
        return gg

    got = penalty_grad(lambda a: dr.interpolate(a, rast, s.tri)[0], attr0)
    want = penalty_grad(lambda a: ref.interpolate(a, uv, None, s.tri.cpu(), tri_id)[0], attr0.cpu().double())
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_second_order_graph_raises_where_there_is_none(device):
    """rasterize and antialias have no second derivatives, texture none through uv: create_graph=True
    raises naming the op, never a gradient without a graph."""
    s = Scene(device, level=1)
    pos = (torch.cat([s.verts, torch.ones_like(s.verts[:, :1])], 1) @ s.mvp.T)[None]
    rast, rast_db = dr.rasterize(s.glctx, pos, s.tri, (8, 8))
    color, _ = dr.interpolate(s.colors, rast, s.tri)
    with pytest.raises(RuntimeError, match="rasterize: higher-order gradients"):
        torch.autograd.grad(color.square().sum(), s.verts, create_graph=True)
    image = dr.antialias(color, rast.detach(), pos, s.tri)
    with pytest.raises(RuntimeError, match="antialias: higher-order gradients"):
        torch.autograd.grad(image.square().sum(), s.colors, create_graph=True)
    uv = torch.rand(1, 8, 8, 2, device=device, requires_grad=True)
    (g,) = torch.autograd.grad(dr.texture(s.tex, uv).square().sum(), s.tex, create_graph=True)
    with pytest.raises(RuntimeError, match="texture: higher-order gradients with respect to uv"):
        g.sum().backward()
    # first-order gradients are unaffected
    assert torch.autograd.grad(color.square().sum(), s.verts)[0].abs().sum() > 0


# ---------------------------------------------------------------------------
# dtypes and autocast


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32(device, dtype):
    """float16 / bfloat16 inputs are computed in float32 and returned in the input's dtype (rasterize:
    float32 always, its id channel needs 24 bits); gradients come back in the input's dtype."""
    s = Scene(device, level=1)
    pos = (torch.cat([s.verts, torch.ones_like(s.verts[:, :1])], 1) @ s.mvp.T)[None].detach()
    low = {name: t.detach().to(dtype).requires_grad_(True) for name, t in (("pos", pos), ("col", s.colors))}
    rast, rast_db = dr.rasterize(s.glctx, low["pos"], s.tri, (8, 8))
    want_rast, _ = dr.rasterize(s.glctx, low["pos"].detach().float(), s.tri, (8, 8))
    assert rast.dtype == torch.float32 and torch.equal(rast, want_rast)
    color, _ = dr.interpolate(low["col"], rast, s.tri)
    texel = dr.texture(s.tex.detach().to(dtype), color[..., :2].float())
    image = dr.antialias(color * texel, rast, low["pos"], s.tri)
    assert color.dtype == texel.dtype == image.dtype == dtype
    want_color, _ = dr.interpolate(low["col"].detach().float(), rast, s.tri)
    torch.testing.assert_close(color, want_color.to(dtype), rtol=0, atol=0)
    image.float().sum().backward()
    assert low["pos"].grad.dtype == low["col"].grad.dtype == dtype
    assert low["col"].grad.float().abs().sum() > 0


def test_autocast_step_matches_float32(scene):
    """Under torch.autocast the transform's matmul gives bfloat16 positions; the step runs, and its loss and
    gradients (float32, as the leaves) stay near the float32 step's: positions rounded to bfloat16's 8 bits
    move silhouettes by a fraction of a pixel, so the vertex gradient differs by up to ~10% (L2)."""
    want = scene.loss_and_grads(scene.loss)
    with torch.autocast(scene.target.device.type, dtype=torch.bfloat16):
        got = scene.loss_and_grads(scene.loss)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        assert (g - w).norm() <= 0.15 * w.norm()
        assert torch.nn.functional.cosine_similarity(g.flatten(), w.flatten(), 0) > 0.99


def test_float64_raises_naming_the_argument():
    attr = torch.zeros(3, 3, dtype=torch.float64)
    rast = torch.zeros(1, 2, 2, 4)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with pytest.raises(TypeError, match=r"interpolate: attr must have dtype torch.float32 \(or float16 / bfloat16"):
        dr.interpolate(attr, rast, tri)
    with pytest.raises(TypeError, match="interpolate: rast must have dtype torch.float32, got"):
        dr.interpolate(attr.float(), rast.half(), tri)
