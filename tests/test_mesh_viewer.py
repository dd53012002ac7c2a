"""`glrast view MESH` as a user runs it: its own process on a private X server, driven by real X
input events (xdotool) and watched through X screenshots of its window (tests/xserver.py)."""

import math
import subprocess
import sys

import numpy as np
from PIL import Image
from xserver import wait_for

from glrast import mesh
from glrast.cli import main


def write_ellipsoid(path):
    """An OBJ ellipsoid (icosphere, level 2: 320 triangles) with spherical texture coordinates."""
    pos, tri = mesh.icosphere(2)
    p = pos.numpy() * np.array([1.0, 0.7, 0.5])
    u = 0.5 + np.arctan2(p[:, 0], p[:, 2]) / (2 * math.pi)
    v = 0.5 + np.arcsin(np.clip(pos.numpy()[:, 1], -1, 1)) / math.pi
    lines = [f"v {x} {y} {z}" for x, y, z in p] + [f"vt {a} {b}" for a, b in zip(u, v)]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in tri.numpy() + 1]
    path.write_text("\n".join(lines) + "\n")
    return len(tri)


def test_view_driven_by_x_input(xserver, tmp_path):
    triangles = write_ellipsoid(tmp_path / "egg.obj")
    log = open(tmp_path / "stdout.txt", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "glrast", "view", "egg.obj", "--res", "120", "160", "--device", "cpu",
         "--out", "shots"], cwd=tmp_path, env=xserver.env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        window = xserver.find_window("glrast view: egg.obj")
        wait_for(lambda: "ms/frame" in xserver.title(window), what="the first frame")
        title = xserver.title(window)
        assert f"{triangles} triangles, shaded" in title, title

        def shot():
            return xserver.screenshot(window)

        def changes_from(before, what):
            after = []
            wait_for(lambda: not np.array_equal(after.append(shot()) or after[-1], before), what=what)
            return after[-1]

        def becomes(target, what):
            wait_for(lambda: np.array_equal(shot(), target), what=what)

        shaded = shot()
        assert shaded.shape == (120, 160, 3)
        background = shaded[0, 0]
        assert (np.abs(shaded.astype(int) - background).sum(-1) > 30).mean() > 0.2  # the egg fills the view

        xserver.drag(window, 1, (60, 60), (110, 70))  # orbit
        changes_from(shaded, "orbiting with the left button")
        xserver.key(window, "r")
        becomes(shaded, "r resetting the camera")
        xserver.drag(window, 3, (80, 60), (40, 40))  # pan
        panned = changes_from(shaded, "panning with the right button")
        xserver.scroll(window, (80, 60), 3)  # zoom in
        changes_from(panned, "zooming with the wheel")
        xserver.key(window, "r")
        becomes(shaded, "r resetting the camera")

        xserver.key(window, "6")
        wire = changes_from(shaded, "the wireframe mode")
        edges = np.all(np.abs(wire.astype(int) - (255, 140, 26)) <= 40, axis=-1)
        assert edges.sum() > 200 and not np.all(np.abs(shaded.astype(int) - (255, 140, 26)) <= 40, -1).any()
        xserver.key(window, "4")
        ids = changes_from(wire, "the triangle id mode")
        assert len(np.unique(ids.reshape(-1, 3), axis=0)) > 60  # a colour per visible triangle
        assert "ids" in xserver.title(window)

        xserver.key(window, "s")
        saved = tmp_path / "shots" / "view_000.png"
        wait_for(saved.is_file, what="s saving a PNG")
        assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), shot())

        xserver.key(window, "h")
        wait_for(lambda: "triangle ids" in (tmp_path / "stdout.txt").read_text(), what="h printing the keys")
        xserver.key(window, "q")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "stdout.txt").read_text()
    assert f"{triangles} triangles; press h" in output and f"saved {saved.relative_to(tmp_path)}" in output


def test_view_without_display(tmp_path, monkeypatch, capsys):
    write_ellipsoid(tmp_path / "egg.obj")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(tmp_path / "egg.obj"), "--device", "cpu"]) == 1
    assert capsys.readouterr().err.startswith("glrast: error: glrast.Viewer: cannot open a window: there is no display")
    assert main(["view", str(tmp_path / "nosuch.obj")]) == 2
    assert "glrast: error: view: no such mesh file: " in capsys.readouterr().err
