"""`glrast view MESH`: an interactive orbit-camera viewer of a mesh file, rendered by glrast
itself (rasterize -> interpolate -> shading or texture -> antialias, see shading.py) and shown
in a glrast.Viewer window.

The rendering uses a headless RasterizeGLContext of its own rather than the window's GL
context: on Mesa both run at the same speed (benchmarks/bench_viewer.py measures it), and
only the headless one is sure to sit on the tensors' GPU (a window's context belongs to
whichever GPU or driver runs the display) and to offer OpenGL 4.3.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import camera
from .shading import shade, unit_sphere_transform
from .viewer import InputEvent, Viewer

KEYS = {"1": "shaded", "2": "normals", "3": "depth", "4": "ids", "5": "uv", "6": "wireframe"}
HELP = """glrast view: left drag orbits, right drag pans, the wheel zooms.
  1 shaded   2 normals   3 depth   4 triangle ids   5 UV checker texture   6 wireframe
  s save a PNG of the window   r reset the camera   h this help   q or Esc quit"""
FOV = 40.0  # vertical field of view, degrees
BACKGROUND = (0.16, 0.17, 0.19)


class OrbitCamera:
    """A camera on a sphere around a target, in the unit-sphere frame of the mesh."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.azimuth, self.elevation = 0.6, 0.35  # radians
        self.distance = 1.15 / math.sin(math.radians(FOV) / 2)  # the unit sphere fills the view
        self.target = torch.zeros(3)

    def eye(self) -> torch.Tensor:
        ce = math.cos(self.elevation)
        offset = torch.tensor([ce * math.sin(self.azimuth), math.sin(self.elevation), ce * math.cos(self.azimuth)])
        return self.target + self.distance * offset

    def orbit(self, dx: float, dy: float) -> None:
        """Cursor motion in pixels: right turns the object right, down tilts it towards the viewer."""
        self.azimuth -= 0.01 * dx
        self.elevation = min(max(self.elevation + 0.01 * dy, -1.55), 1.55)

    def pan(self, dx: float, dy: float, height_px: int) -> None:
        """Move the target so that the surface under the cursor follows it (at the target's depth)."""
        forward = torch.nn.functional.normalize(self.target - self.eye(), dim=0)
        right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0])), dim=0)
        up = torch.linalg.cross(right, forward)
        per_pixel = 2 * self.distance * math.tan(math.radians(FOV) / 2) / height_px
        self.target = self.target + per_pixel * (-dx * right + dy * up)

    def zoom(self, steps: float) -> None:
        self.distance = min(max(self.distance * 0.9**steps, 0.05), 100.0)

    def clip_from_unit(self, aspect: float) -> torch.Tensor:
        """[4, 4] clip-from-unit-sphere matrix."""
        reach = float(self.target.norm()) + 1.0
        near = max(self.distance - reach, 0.01 * self.distance)
        proj = camera.perspective(FOV, aspect, near, self.distance + reach)
        return proj @ camera.look_at(self.eye(), self.target)


class MeshView:
    """The state of one `glrast view` session: mesh, camera, mode; turns input into frames."""

    def __init__(self, viewer: Viewer, glctx: Any, m: Any, name: str, res: tuple[int, int], out: Path) -> None:
        self.viewer, self.glctx, self.m, self.name, self.res, self.out = viewer, glctx, m, name, res, out
        self.to_unit, self.centre, self.radius = unit_sphere_transform(m.pos)
        self.camera = OrbitCamera()
        self.mode = "shaded"
        self.saved = 0
        self.frame_ms = 0.0

    def handle(self, event: InputEvent) -> bool:
        """Apply one input event; True if the view changed."""
        if event.kind == "drag" and event.button in (0, 1):
            if event.button == 0:
                self.camera.orbit(event.dx, event.dy)
            else:
                self.camera.pan(event.dx, event.dy, self.res[0])
            return True
        if event.kind == "scroll":
            self.camera.zoom(event.dy)
            return True
        if event.kind != "key":
            return False
        key = event.text.lower()
        if key in KEYS:
            if KEYS[key] == "uv" and self.m.uv is None:
                print("glrast view: this mesh has no texture coordinates (no UV mode)", flush=True)
                return False
            self.mode = KEYS[key]
            return True
        if key == "r":
            self.camera.reset()
            return True
        if key == "h":
            print(HELP, flush=True)
        elif key == "s":
            self.save()
        elif key == "q":
            self.viewer.close()
        return False

    def render(self) -> torch.Tensor:
        """[H, W, 3] of the current view over the background (row 0 = bottom)."""
        height, width = self.res
        mvp = self.camera.clip_from_unit(width / height) @ self.to_unit
        eye = self.centre + self.radius * self.camera.eye()
        rgba = shade(self.glctx, self.m, mvp, eye, height, width, self.mode)
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + rgba.new_tensor(BACKGROUND) * (1 - alpha)

    def draw(self) -> None:
        """Render, show, and put the frame time into the title."""
        start = time.perf_counter()
        image = self.render()
        self.viewer.show(image)
        if image.is_cuda:
            torch.cuda.synchronize(image.device)
        self.frame_ms = 1000 * (time.perf_counter() - start)
        triangles = self.m.tri.shape[0]
        self.viewer.set_title(f"glrast view: {self.name}, {triangles} triangles, {self.mode}, "
                              f"{self.frame_ms:.1f} ms/frame (h: help)")  # fmt: skip

    def save(self) -> Path:
        from PIL import Image

        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"view_{self.saved:03d}.png"
        while path.exists():
            self.saved += 1
            path = self.out / f"view_{self.saved:03d}.png"
        Image.fromarray(self.viewer.screenshot()).save(path)
        print(f"glrast view: saved {path}", flush=True)
        return path


def load_texture(path: Path, device: torch.device) -> torch.Tensor:
    """[h, w, 3] float in [0, 1] of an image file, row 0 = the image's bottom (t = 0)."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb[::-1])).to(device)


def run(path: Path, texture: Path | None = None, res: tuple[int, int] = (512, 512), device: str | None = None,
        out: Path = Path(".")) -> int:  # fmt: skip
    """The `glrast view` session; returns when the window is closed."""
    import dataclasses

    import glrast as dr

    from . import mesh
    from .context import resolve_device

    if min(res) < 1:
        raise ValueError(f"glrast view: --res must be >= 1, got {res}")
    dev = resolve_device(device, "glrast view --device")
    m = mesh.load(path, device=dev)
    if texture is not None:
        if m.uv is None:
            raise ValueError(f"glrast view: --texture needs a mesh with texture coordinates; {path} has none")
        m = dataclasses.replace(m, texture=load_texture(texture, dev))
    height, width = res
    title = f"glrast view: {Path(path).name}"
    with dr.RasterizeGLContext(device=dev) as glctx, Viewer(width=width, height=height, title=title,
                                                             max_fps=None) as viewer:  # fmt: skip
        app = MeshView(viewer, glctx, m, Path(path).name, res, Path(out))
        print(f"glrast view: {path}, {m.tri.shape[0]} triangles; press h in the window for help", flush=True)
        dirty = True
        while not viewer.closed:
            for event in viewer.input_events():
                dirty = app.handle(event) or dirty
            if dirty and not viewer.closed:
                app.draw()
                dirty = False
            viewer.wait(0.05)
    return 0

