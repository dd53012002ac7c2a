"""The GL visibility pass of rasterize: programs, buffers, render targets and
readback, owned by one RasterizeGLContext (glrast/context.py).

`RasterPipeline.draw` rasterizes one image per draw and returns the triangle id
(+1) of every pixel; glrast/raster.py turns the ids into rast and rast_db with
its kernels. Nothing here sees gradients.
"""

from __future__ import annotations

import ctypes
from typing import Any

import moderngl
import torch

from . import ids, interop, kernels
from ._resources import resource_dir
from .params import Params

CORNER_CHUNK = 1 << 18  # triangle corners gathered per staging pass (4 MiB)


class CornerParams(Params):
    """Mirror of CornerParams in csrc/raster.cu (the raster_corners kernel)."""

    _fields_ = [
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("corners", ctypes.c_void_p),
        ("image", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
    ]


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
            defines = ids.glsl_defines() + ("#define PEEL\n" if peel else "")
            frag = (shaders / "rasterize.frag").read_text().replace("#version 430\n", "#version 430\n" + defines, 1)
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
        verts_per_image = pos.shape[1] if pos.ndim == 3 else 0
        params = CornerParams(
            pos=pos.data_ptr(), corners=self.corners.data_ptr(), image=image, verts_per_image=verts_per_image
        )
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
