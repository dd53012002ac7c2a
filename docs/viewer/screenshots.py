"""Make the README's viewer screenshots from real windows: a private Xvfb (tests/xserver.py),
`glrast view` in its own process driven with xdotool, and examples/cube.py with --display;
both photographed by the X server (ImageMagick's import).

    .venv/bin/python docs/viewer/screenshots.py      # writes docs/viewer/*.png, about a minute
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))

from xserver import XServer, wait_for  # noqa: E402

OUT = Path(__file__).resolve().parent
MODES = {"1": "shaded", "2": "normals", "4": "ids", "5": "uv", "6": "wireframe"}


def write_knot(path: Path, segments: int = 360, sides: int = 24) -> None:
    """A tube around a (2, 3) torus knot (17k triangles) with texture coordinates (u along the
    knot, v around the tube), as OBJ."""
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    curve = np.stack([(2 + np.cos(3 * t)) * np.cos(2 * t), (2 + np.cos(3 * t)) * np.sin(2 * t), np.sin(3 * t)], 1)
    tangent = np.roll(curve, -1, 0) - np.roll(curve, 1, 0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.cross(tangent, [0.0, 0.0, 1.0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    binormal = np.cross(tangent, normal)
    a = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.cos(a)[None, :, None] * normal[:, None] + np.sin(a)[None, :, None] * binormal[:, None]
    verts = (curve[:, None] + 0.45 * ring).reshape(-1, 3)
    uv = np.stack(np.meshgrid(np.arange(segments) / segments * 6, np.arange(sides) / sides, indexing="ij"), -1)
    i, j = np.meshgrid(np.arange(segments), np.arange(sides), indexing="ij")
    i1, j1 = (i + 1) % segments, (j + 1) % sides
    quads = np.stack([i * sides + j, i1 * sides + j, i1 * sides + j1, i * sides + j1], -1).reshape(-1, 4)
    tri = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]) + 1
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv.reshape(-1, 2)]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in tri]
    path.write_text("\n".join(lines) + "\n")


def view_modes(xserver: XServer, work: Path) -> None:
    write_knot(work / "knot.obj")
    process = subprocess.Popen([sys.executable, "-m", "glrast", "view", "knot.obj", "--res", "320", "320"],
                               cwd=work, env=xserver.env(), stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        window = xserver.find_window("glrast view: knot.obj")
        wait_for(lambda: "ms/frame" in xserver.title(window), what="the first frame")
        xserver.drag(window, 1, (100, 160), (160, 130))  # orbit a little
        time.sleep(3)
        shots = []
        for key, mode in MODES.items():
            xserver.key(window, key)
            wait_for(lambda mode=mode: f", {mode}," in xserver.title(window), timeout=60, what=mode)
            time.sleep(0.5)
            shots.append(xserver.screenshot(window))
        print(xserver.title(window))
        xserver.key(window, "q")
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    gap = np.full((shots[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for shot in shots for x in (shot, gap)][:-1], axis=1)
    Image.fromarray(row).save(OUT / "view_modes.png")


def cube_display(xserver: XServer, step: int = 60) -> None:
    """examples/cube.py with --display, photographed after `step` steps."""
    import _common
    import cube

    class Photographed(_common.LiveDisplay):
        steps = 0

        def update(self, *args, **kwargs) -> None:
            super().update(*args, **kwargs)
            self.steps += 1
            if self.steps == step:
                self.viewer.screenshot()  # draws the latest curve too
                shot = xserver.screenshot(xserver.find_window("glrast cube"))
                Image.fromarray(shot).save(OUT / "cube_display.png")

    os.environ["DISPLAY"] = xserver.display
    with Photographed(True, "glrast cube", max_fps=None) as display:  # every step shown
        cube.run(steps=step, device="cpu", quiet=True, display=display)


def main() -> None:
    xserver = XServer()
    try:
        with tempfile.TemporaryDirectory() as work:
            view_modes(xserver, Path(work))
        cube_display(xserver)
    finally:
        xserver.stop()
    print(f"wrote {OUT / 'view_modes.png'} and {OUT / 'cube_display.png'}")


if __name__ == "__main__":
    main()
