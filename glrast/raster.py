"""rasterize and DepthPeeler: the GL visibility pass and its backward kernel."""

from __future__ import annotations

import ctypes
from typing import Any

import moderngl
import torch

from . import _checks, interop, kernels
from ._log import logger
from ._resources import resource_dir
from .context import RasterizeGLContext

_FN = "rasterize"
CORNER_CHUNK = 1 << 18  # triangle corners gathered per staging pass (4 MiB)


class RasterPipeline:
    """The GL objects of the visibility pass, owned by one RasterizeGLContext.

    The GL pass draws the triangles' corners (the raster_corners kernel gathers
    them from pos and tri) as a plain triangle list and writes one triangle id
    (+1) per pixel into an R32UI target; the raster_fwd kernel then computes
    rast and rast_db from the ids. Buffers and render targets grow to the
    largest size seen and are reused; images of a batch are drawn one after
    another into the same target and read back in turn, so the target never
    needs more than one image.
    """

    def __init__(self, gl: moderngl.Context):
        self.gl = gl
        self.corner_buf = gl.buffer(reserve=48)  # [3T, 4] corners of one position set
        self.corners: torch.Tensor | None = None  # [CORNER_CHUNK, 4] staging for corner_buf, on pos's device
        self.pos_buf = gl.buffer(reserve=16)  # depth peeling reads pos and tri as storage buffers
        self.tri_buf = gl.buffer(reserve=12)
        self.programs: dict[bool, tuple[moderngl.Program, moderngl.VertexArray]] = {}
        self.size = (0, 0)  # (width, height) of the render target
        self.targets: list[Any] = []
        self.prev_tex: moderngl.Texture | None = None  # depth peeling only, created on first use
        self.reader = interop.TargetReader()

    def _program(self, peel: bool) -> tuple[moderngl.Program, moderngl.VertexArray]:
        """The plain program, or the depth-peeling variant (built on first use)."""
        if peel not in self.programs:
            shaders = resource_dir("shaders")
            frag = (shaders / "rasterize.frag").read_text()
            if peel:
                frag = frag.replace("#version 430\n", "#version 430\n#define PEEL\n", 1)
            program = self.gl.program(vertex_shader=(shaders / "rasterize.vert").read_text(), fragment_shader=frag)
            if peel:
                program["prev_id"].value = 0
            vao = self.gl.vertex_array(program, [(self.corner_buf, "4f", "in_pos")])
            self.programs[peel] = (program, vao)
        return self.programs[peel]

    def _grow(self, height: int, width: int) -> None:
        w, h = max(width, self.size[0]), max(height, self.size[1])
        if (w, h) == self.size:
            return
        self.reader.reset()
        for obj in self.targets:
            obj.release()
        if self.prev_tex is not None:
            self.prev_tex.release()
            self.prev_tex = None
        ids = self.gl.texture((w, h), 1, dtype="u4")
        depth = self.gl.depth_renderbuffer((w, h))
        self.fbo = self.gl.framebuffer(color_attachments=[ids], depth_attachment=depth)
        self.targets = [self.fbo, ids, depth]
        self.size = (w, h)

    def _peel_texture(self) -> moderngl.Texture:
        """The previous layer's id channel (rast[..., 3]) as a texture, sized like the render target."""
        if self.prev_tex is None:
            self.prev_tex = self.gl.texture(self.size, 1, dtype="f4")
            self.prev_tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return self.prev_tex

    @staticmethod
    def _upload(buf: moderngl.Buffer, host: torch.Tensor) -> None:
        # Uploaded on every call: a cache keyed on the tensor's version counter would
        # miss in-place changes made through `.data`, and the copy is a small part of
        # the draw.
        if buf.size < host.numel() * host.element_size():
            buf.orphan(host.numel() * host.element_size())
        buf.write(host.numpy())

    def _upload_corners(self, pos: torch.Tensor, tri: torch.Tensor, image: int) -> None:
        """Gather the corners of every triangle for position set `image` into corner_buf,
        a chunk at a time through a small staging tensor (no full-size host copy)."""
        total = tri.numel()
        if self.corner_buf.size < 16 * total:
            self.corner_buf.orphan(16 * total)
        if self.corners is None or self.corners.device != pos.device:
            self.corners = torch.empty(CORNER_CHUNK, 4, dtype=torch.float32, device=pos.device)
        host = self.corners if pos.device.type == "cpu" else torch.empty(CORNER_CHUNK, 4, dtype=torch.float32)
        mod = kernels.module("raster", pos.device)
        params = RasterParams(pos=pos.data_ptr(), corners=self.corners.data_ptr(), image=image)
        params.verts_per_image = pos.shape[1] if pos.ndim == 3 else 0
        for start in range(0, total, CORNER_CHUNK):
            n = min(CORNER_CHUNK, total - start)
            params.tri = tri.data_ptr() + 4 * start  # corner start + i is tri's flat element start + i
            mod.launch("raster_corners", params, n)
            if host is not self.corners:
                host[:n].copy_(self.corners[:n])
            self.corner_buf.write(host[:n].numpy(), offset=16 * start)

    def draw(
        self,
        pos: torch.Tensor,
        tri: torch.Tensor,
        draws: list[tuple[int, int, int]],
        height: int,
        width: int,
        prev_rast: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rasterize one image per (position set, first_tri, tri_count) in `draws`;
        returns the ids [N, H, W] int32 (triangle id + 1, 0 where empty)."""
        self._grow(height, width)
        if prev_rast is not None:  # the peeling shader reads the vertices itself
            self._upload(self.pos_buf, pos.detach().cpu().contiguous())
            self._upload(self.tri_buf, tri.cpu())
            self.pos_buf.bind_to_storage_buffer(0)
            self.tri_buf.bind_to_storage_buffer(1)
        program, vao = self._program(prev_rast is not None)
        ids = torch.empty(len(draws), height, width, dtype=torch.int32, device=pos.device)
        viewport = (0, 0, width, height)
        gl = self.gl
        gl.enable(moderngl.DEPTH_TEST)
        gl.depth_func = "<"
        gl.disable(moderngl.CULL_FACE | moderngl.BLEND)
        self.fbo.use()
        self.fbo.viewport = viewport
        if prev_rast is not None:
            program["ndc_scale"].value = (2.0 / width, 2.0 / height)
        uploaded = None
        for layer, (image, first, count) in enumerate(draws):
            if image != uploaded:  # once per position set: every image in instanced mode, once in range mode
                self._upload_corners(pos.detach(), tri, image)
                uploaded = image
            self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=viewport)
            if prev_rast is not None:
                prev_tex = self._peel_texture()
                prev_tex.write(prev_rast[layer, ..., 3].detach().cpu().contiguous().numpy(), viewport=viewport)
                prev_tex.use(0)
                program["vertex_base"].value = image * pos.shape[-2]
            program["tri_base"].value = first
            if count > 0:
                vao.render(moderngl.TRIANGLES, vertices=3 * count, first=3 * first)
            self.reader.read(self.fbo, [(0, ids[layer])], viewport)
        return ids

    def release(self) -> None:
        self.reader.reset()
        for program, vao in self.programs.values():
            vao.release()
            program.release()
        for obj in (*self.targets, self.prev_tex, self.corner_buf, self.pos_buf, self.tri_buf):
            if obj is not None:
                obj.release()
        self.targets = []
        self.prev_tex = None
        self.programs = {}
        self.corners = None


class RasterParams(ctypes.Structure):
    _fields_ = [
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("ids", ctypes.c_void_p),
        ("rast", ctypes.c_void_p),
        ("rast_db", ctypes.c_void_p),
        ("grad_rast", ctypes.c_void_p),
        ("grad_db", ctypes.c_void_p),
        ("grad_pos", kernels.Accumulator),
        ("corners", ctypes.c_void_p),
        ("image", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
        ("num_tris", ctypes.c_int),
    ]


def _params(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor, **tensors: torch.Tensor | None) -> RasterParams:
    _, height, width, _ = rast.shape
    params = RasterParams(
        pos=pos.data_ptr(),
        tri=tri.data_ptr(),
        rast=rast.data_ptr(),
        height=height,
        width=width,
        verts_per_image=pos.shape[1] if pos.ndim == 3 else 0,
        num_tris=tri.shape[0],
    )
    for name, t in tensors.items():
        setattr(params, name, kernels.ptr(t))
    return params


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, draws, glctx, height, width, grad_db, prev_rast):
        with glctx.activate():
            ids = glctx.pipeline().draw(pos, tri, draws, height, width, prev_rast)
        n = len(draws)
        rast = torch.empty(n, height, width, 4, dtype=torch.float32, device=pos.device)
        rast_db = torch.empty(n, height, width, 4 if glctx.output_db else 0, dtype=torch.float32, device=pos.device)
        params = _params(pos, tri, rast, ids=ids, rast_db=rast_db if glctx.output_db else None)
        kernels.module("raster", pos.device).launch("raster_fwd", params, n * height * width)
        ctx.save_for_backward(pos, tri, rast)
        ctx.grad_db = grad_db and glctx.output_db
        return rast, rast_db

    @staticmethod
    def backward(ctx, grad_rast, grad_rast_db):
        pos, tri, rast = ctx.saved_tensors
        # Kept in locals: the kernel only sees raw pointers, so the tensors must outlive the launch.
        grad_rast = grad_rast.contiguous()
        use_db = ctx.grad_db and grad_rast_db is not None and grad_rast_db.numel() > 0
        grad_db = grad_rast_db.contiguous() if use_db else None
        mod = kernels.module("raster", pos.device)
        grad_slots, accumulator = kernels.accumulator(mod, pos)
        params = _params(pos, tri, rast, grad_rast=grad_rast, grad_db=grad_db)
        params.grad_pos = accumulator
        mod.launch("raster_grad", params, rast[..., 0].numel())
        return kernels.collect(grad_slots), None, None, None, None, None, None, None


_ranges_warned = False


def _warn_ranges_ignored(fn: str, pos: torch.Tensor) -> None:
    """nvdiffrast ignores ranges in instanced mode; so does glrast, saying so once per process."""
    global _ranges_warned
    if not _ranges_warned:
        _ranges_warned = True
        logger.warning(
            "%s: ranges is ignored with instanced pos of shape %s (only [V, 4] pos uses ranges); "
            "this warning is shown once",
            fn,
            list(pos.shape),
        )


def _prepare(glctx: Any, pos: Any, tri: Any, resolution: Any, ranges: Any, fn: str, peel: bool = False):
    """Validate rasterize's arguments; returns (pos, tri, draws, height, width).
    peel: for DepthPeeler, whose shader reads pos and tri as GL storage buffers."""
    if not isinstance(glctx, RasterizeGLContext):
        raise TypeError(f"{fn}: glctx must be a RasterizeGLContext, got {type(glctx).__name__}")
    pos = _checks.tensor(fn, "pos", pos, "[N, V, 4] (instanced) or [V, 4] (with ranges)", ndims=(2, 3), last=4)
    tri = _checks.tensor(fn, "tri", tri, "[T, 3]", ndims=(2,), last=3, dtype=torch.int32)
    _checks.same_device(fn, pos.device, tri=tri)
    if pos.device != glctx.device:
        raise ValueError(f"{fn}: pos is on {pos.device} but the context serves {glctx.device}")
    height, width = _checks.resolution(fn, resolution, glctx.max_resolution)
    num_verts = pos.shape[-2]
    _checks.triangles(fn, tri, num_verts)
    num_tris = tri.shape[0]
    if num_tris + 1 > 0x34FFFFFF:
        raise ValueError(f"{fn}: {num_tris} triangles exceed the id encoding's limit of {0x34FFFFFF - 1}")
    for name, t in (("pos", pos), ("tri", tri)) if peel else ():
        if t.numel() * 4 > glctx.max_storage_bytes:
            raise ValueError(
                f"{fn}: {name} needs {t.numel() * 4} bytes of GL storage buffer, above this GL's limit of "
                f"{glctx.max_storage_bytes} (GL_MAX_SHADER_STORAGE_BLOCK_SIZE); peel fewer images or triangles"
            )
    if pos.ndim == 3:
        if ranges is not None:
            _warn_ranges_ignored(fn, pos)
        draws = [(n, 0, num_tris) for n in range(pos.shape[0])]
    else:
        if ranges is None:
            raise ValueError(f"{fn}: pos of shape [V, 4] needs ranges (range mode); for one image use pos[None]")
        if (
            not isinstance(ranges, torch.Tensor)
            or ranges.dtype != torch.int32
            or ranges.ndim != 2
            or ranges.shape[1] != 2
        ):
            got = _checks.describe(ranges) if isinstance(ranges, torch.Tensor) else type(ranges).__name__
            raise ValueError(f"{fn}: ranges must be an int32 tensor of shape [N, 2], got {got}")
        if ranges.device.type != "cpu":
            raise ValueError(f"{fn}: ranges must be on the CPU, got {ranges.device}")
        draws = []
        for first, count in ranges.tolist():
            if first < 0 or count < 0 or first + count > num_tris:
                raise ValueError(
                    f"{fn}: range (first={first}, count={count}) is outside the {num_tris} triangles of tri"
                )
            draws.append((0, first, count))
    if not draws:
        raise ValueError(f"{fn}: the batch is empty (N = 0)")
    return pos, tri, draws, height, width


def rasterize(
    glctx: RasterizeGLContext,
    pos: torch.Tensor,  # [N, V, 4] or [V, 4] (range mode), float32 clip space
    tri: torch.Tensor,  # [T, 3] int32
    resolution: tuple[int, int],  # (height, width) in pixels
    ranges: torch.Tensor | None = None,  # [N, 2] int32 on the CPU: (first triangle, count); None: instanced mode
    grad_db: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize triangles; returns rast [N, H, W, 4] = (u, v, z/w, id+1) and
    rast_db [N, H, W, 4] = (du/dX, du/dY, dv/dX, dv/dY) ([N, H, W, 0] when the
    context has output_db=False). Row 0 is clip-space y = -1. (u, v, 1 - u - v)
    always lie in the triangle: where GL covers a pixel centre that the exact
    barycentrics put just outside (slivers), the negative ones are clamped to 0
    and the rest renormalised; rast_db holds the triangle's own derivatives.

    Gradients flow from (u, v) and, with grad_db, from rast_db to the x, y and
    w of pos. See SPEC.md "rasterize".
    """
    pos, tri, draws, height, width = _prepare(glctx, pos, tri, resolution, ranges, _FN)
    if glctx.active_peeler is not None:
        raise RuntimeError(f"{_FN}: a DepthPeeler is active on this context; finish it before calling rasterize")
    return _Rasterize.apply(pos, tri, draws, glctx, height, width, bool(grad_db), None)


class DepthPeeler:
    """Peels surface layers front to back: `rasterize_next_layer()` returns the
    (rast, rast_db) of the next-nearest surface at each pixel. Use as a context
    manager; one peeler per context at a time."""

    def __init__(
        self,
        glctx: RasterizeGLContext,
        pos: torch.Tensor,  # [N, V, 4] or [V, 4] (range mode)
        tri: torch.Tensor,  # [T, 3] int32
        resolution: tuple[int, int],  # (height, width)
        ranges: torch.Tensor | None = None,  # [N, 2] int32 on the CPU
        grad_db: bool = True,
    ) -> None:
        fn = "DepthPeeler"
        self._args = _prepare(glctx, pos, tri, resolution, ranges, fn, peel=True)
        self.glctx = glctx
        self.grad_db = bool(grad_db)
        self._prev: torch.Tensor | None = None
        self._active = False

    def __enter__(self) -> DepthPeeler:
        if self.glctx.active_peeler is not None:
            raise RuntimeError("DepthPeeler: another DepthPeeler is already active on this context")
        self.glctx.active_peeler = self
        self._active = True
        self._prev = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self.glctx.active_peeler = None
            self._active = False

    def rasterize_next_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rast, rast_db) of the next layer, as `rasterize` returns them; empty once
        every surface has been peeled."""
        if not self._active:
            raise RuntimeError("DepthPeeler: use it as a context manager (`with DepthPeeler(...) as peeler:`)")
        pos, tri, draws, height, width = self._args
        rast, rast_db = _Rasterize.apply(pos, tri, draws, self.glctx, height, width, self.grad_db, self._prev)
        self._prev = rast.detach()
        return rast, rast_db


def triangle_index(rast: torch.Tensor) -> torch.Tensor:  # [..., 4] -> [...]
    """Decode rast[..., 3] into int64 triangle ids (-1 where the pixel is empty)."""
    rast = _checks.tensor("triangle_index", "rast", rast, "[..., 4]", ndims=range(1, 9), last=4)
    w = rast[..., 3].contiguous()
    bits = w.view(torch.int32).to(torch.int64)
    small = w.to(torch.int64) - 1
    large = bits - 0x4A800000 - 1
    ids = torch.where(w <= 16777216.0, small, large)
    return torch.where(w > 0, ids, torch.full_like(ids, -1))
