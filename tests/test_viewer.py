"""glrast.Viewer in real windows on a private X server (tests/xserver.py): what a window shows,
read back from its framebuffer and photographed from outside the process by the X server;
input events; rate limiting; coexistence with headless contexts; no display."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from xserver import wait_for

import glrast as dr
from glrast import egl
from glrast.viewer import Viewer

CHECKER = (0.35, 0.45)  # the checkerboard behind transparent pixels (8-pixel squares from the bottom-left)


def gpu_test(fn):
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.gpu(skip(fn))


def as_uint8(image) -> np.ndarray:
    """[H, W, 4] uint8 of a shown image, the viewer's documented conversion (grey to RGB, alpha 255)."""
    x = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if x.dtype != np.uint8:
        x = np.round(np.clip(np.nan_to_num(x.astype(np.float64)), 0, 1) * 255).astype(np.uint8)  # NaN: 0
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    if x.shape[-1] == 3:
        x = np.concatenate([x, np.full(x.shape[:-1] + (1,), 255, np.uint8)], -1)
    return x


def expected_window(image, rect) -> np.ndarray:
    """What rect (x, y, w, h; y down) of the window must show: each texel enlarged to an s x s block
    (nearest), row 0 at the bottom, RGBA over the checkerboard."""
    x0, y0, w, h = rect
    rgba = as_uint8(image)
    scale = w // rgba.shape[1]
    assert w == rgba.shape[1] * scale and h == rgba.shape[0] * scale
    big = rgba[::-1].repeat(scale, 0).repeat(scale, 1).astype(np.float64) / 255
    ys, xs = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    square = ((xs - x0) // 8 + (y0 + h - 1 - ys) // 8) % 2
    checker = np.where(square == 1, CHECKER[1], CHECKER[0])[..., None]
    alpha = big[..., 3:]
    return np.round((big[..., :3] * alpha + checker * (1 - alpha)) * 255)


def assert_shows(shot: np.ndarray, images, rects) -> None:
    assert len(rects) == len(images)
    for image, (x, y, w, h) in zip(images, rects):
        got = shot[y : y + h, x : x + w].astype(np.float64)
        want = expected_window(image, (x, y, w, h))
        opaque = as_uint8(image)[..., 3].min() == 255
        assert np.abs(got - want).max() <= (0 if opaque else 1)  # blending rounds once more


def random_images():
    g = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (12, 20, 1), generator=g, dtype=torch.uint8)
    rgb = torch.rand(12, 20, 3, generator=g) * 1.4 - 0.2  # out-of-range values are clamped
    rgb[5, 7] = float("nan")
    rgba = torch.randint(0, 256, (12, 20, 4), generator=g, dtype=torch.uint8)
    rgba[:4, :, 3] = 255
    rgba[4:8, :, 3] = 0
    row = torch.randint(0, 256, (3, 10, 14, 3), generator=g, dtype=torch.uint8)
    mixed = [row[0].numpy(), torch.rand(6, 9, 1, generator=g), rgba[:8, :10].float() / 255]
    return {"grey uint8": grey, "rgb float": rgb, "rgba uint8": rgba, "row of 3": row, "list of 3": mixed}


CASES = random_images()


@pytest.mark.parametrize("case", list(CASES))
def test_window_shows_the_images(xdisplay, case):
    images = CASES[case]
    title = f"glrast test {case}"
    listed = list(images) if isinstance(images, list) or images.dim() == 4 else [images]
    labels = [f"image {k}" for k in range(len(listed))] if len(listed) > 1 else None
    with Viewer(title=title) as viewer:
        assert viewer.show(images, labels)
        window = xdisplay.find_window(title)
        own = viewer.screenshot()
        outside = xdisplay.screenshot(window)
        assert own.shape == outside.shape and np.array_equal(own, outside)
        assert_shows(own, listed, viewer.image_rects)
        if case == "grey uint8":  # sized to the image: enlarged 256 // 12 = 21 times, nothing else
            assert own.shape == (12 * 21, 20 * 21, 3)
            # upright: the image's last row is the window's top row
            assert np.array_equal(own[0, 0], np.repeat(images[-1, 0].numpy(), 3))
        if labels:  # a label strip above the images
            x, y, w, _ = viewer.image_rects[0]
            assert y > 0 and own[:y, x : x + w].max() > 150


def test_esc_closes_and_input_events_arrive(xdisplay):
    image = torch.zeros(16, 16, 3)
    with Viewer(title="glrast test input") as viewer:
        assert viewer.show(image)
        window = xdisplay.find_window("glrast test input")
        xdisplay.drag(window, 1, (40, 60), (100, 40))
        xdisplay.key(window, "a")
        xdisplay.scroll(window, (50, 50), 2)
        events = []

        def arrived():
            viewer.wait(0.05)  # the window's events are processed here
            events.extend(viewer.input_events())
            return any(e.kind == "scroll" for e in events)

        wait_for(arrived, what="input events")
        drags = [e for e in events if e.kind == "drag"]
        assert {e.button for e in drags} == {0}
        assert sum(e.dx for e in drags) == 60 and sum(e.dy for e in drags) == -20
        assert [e.text for e in events if e.kind == "key"] == ["a"]
        assert sum(e.dy for e in events if e.kind == "scroll") == 2
        xdisplay.key(window, "Escape")
        wait_for(lambda: not viewer.show(image), what="closing on Esc")
        assert viewer.closed and not viewer.plot("loss", 1.0)
    viewer.close()  # idempotent


def test_rate_limit(xdisplay):
    image = torch.rand(64, 64, 3)
    with Viewer(max_fps=30, max_share=1.0) as viewer:  # the rate alone (a frame's cost sets no wait)
        uploads = []
        write = viewer._writer.write
        viewer._writer.write = lambda texture, canvas: uploads.append(1) or write(texture, canvas)
        start = time.perf_counter()
        assert all(viewer.show(image) for _ in range(1000))
        elapsed = time.perf_counter() - start
        assert 1 <= len(uploads) == viewer.frames <= 30 * elapsed + 1
        assert len(uploads) < 100  # 1000 calls take a small fraction of a second
        uploads.clear()
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5:
            viewer.show(image)
        assert 5 <= len(uploads) <= 17  # about 30 a second
        uploads.clear()
        for k in range(4):  # a slow loop: plot() draws the frame first, and show() still gets its own
            time.sleep(0.12)
            viewer.plot("loss", k)
            viewer.show(image)
        assert len(uploads) == 4
    with Viewer(max_fps=None) as viewer:
        for _ in range(10):
            viewer.show(image)
        assert viewer.frames == 10


def slow_uploads(viewer, seconds):
    """Make each of the viewer's uploads take `seconds` longer; returns the original upload."""
    write = viewer._writer.write
    viewer._writer.write = lambda texture, canvas: time.sleep(seconds) or write(texture, canvas)
    return write


def test_slow_frames_keep_within_their_share_of_the_time(xdisplay):
    image = torch.rand(32, 32, 3)
    # (the first frame, which also builds the GL objects, holds nothing back: one more frame)
    for share, fewest, most in ((0.05, 2, 5), (1.0, 15, 50)):
        with Viewer(max_fps=1000, max_share=share) as viewer:
            # every upload takes 20 ms: within 5 % of the time that leaves one frame per 0.4 s
            slow_uploads(viewer, 0.02)
            start = time.perf_counter()
            while time.perf_counter() - start < 1.0:
                viewer.show(image)
            assert fewest <= viewer.frames <= most, (share, viewer.frames)


def test_a_slow_first_frame_holds_nothing_back(xdisplay):
    """The first frame builds the window's GL objects (shaders, textures): a slow one says nothing
    of what later frames cost, so the next frame comes after max_fps's interval, not 20x its time."""
    image = torch.rand(32, 32, 3)
    with Viewer(max_fps=20, max_share=0.05) as viewer:
        write = slow_uploads(viewer, 0.3)
        viewer.show(image)
        viewer._writer.write = write
        start = time.perf_counter()
        while viewer.frames < 2 and time.perf_counter() - start < 2.0:
            viewer.show(image)
        assert viewer.frames == 2 and time.perf_counter() - start < 1.0


def scene():
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.6, 0.5, 1.0], [0.1, 0.9, 0.2, 1.0], [0.9, 0.9, -0.5, 1.0]]])
    tri = torch.tensor([[0, 1, 2], [1, 3, 2]], dtype=torch.int32)
    return pos, tri


def render(glctx):
    pos, tri = scene()
    rast, rast_db = dr.rasterize(glctx, pos, tri, (48, 64))
    color, _ = dr.interpolate(torch.eye(3)[[0, 1, 2, 0]].contiguous(), rast, tri)
    return rast, rast_db, color[0]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_coexistence_with_headless_contexts(xdisplay):
    automatic = dr.RasterizeGLContext(device="cpu")
    manual = dr.RasterizeGLContext(device="cpu", mode="manual")
    before = render(automatic)
    manual.set_context()
    assert same(render(manual), before)
    with Viewer(title="glrast test coexistence") as viewer:
        for k in range(4):
            assert same(render(automatic), before)
            state = egl.current_context()
            assert viewer.show(before[2])
            assert egl.current_context() == state  # the EGL context current before is current again
            assert same(render(manual), before)  # manual mode: still current, never set again
            assert_shows(viewer.screenshot(), [before[2]], viewer.image_rects)
            viewer.plot("k", k)
        with dr.RasterizeGLContext(device="cpu") as third:  # made while the window is open
            assert same(render(third), before)
        assert viewer.show(render(automatic)[2])
    manual.release_context()
    assert same(render(automatic), before)  # after the window is gone
    automatic.release()
    manual.release()


def test_plot_draws_the_curve(xdisplay):
    with Viewer(width=400, height=200, max_fps=None) as viewer:
        time.sleep(0.1)  # a loop that calls plot() and no show(): plot() draws the frames
        for k in range(50):
            assert viewer.plot("loss", torch.tensor(10.0 ** (-k / 10)))
        shot = xdisplay.screenshot(xdisplay.find_window("glrast"))
    orange = np.all(np.abs(shot.astype(int) - (250, 153, 51)) <= 2, axis=-1)
    ys, xs = np.nonzero(orange[40:])  # below the legend line
    assert xs.size > 100 and xs.max() - xs.min() > 300
    assert ys[xs == xs.min()].mean() < ys[xs == xs.max()].mean()  # falls from left to right


def test_module_level_show(xdisplay):
    from glrast import viewer as viewer_module

    image = torch.rand(8, 8, 3)
    try:
        assert dr.show(image)
        opened = viewer_module._default["viewer"]
        assert dr.show(image) and viewer_module._default["viewer"] is opened  # one viewer
        opened.close()
        assert not dr.show(image)
    finally:
        viewer_module._default.clear()


def test_bad_arguments(xdisplay):
    with pytest.raises(ValueError, match="Viewer: width must be a positive int or None, got 0"):
        Viewer(width=0)
    with pytest.raises(ValueError, match="Viewer: max_fps must be a positive number or None"):
        Viewer(max_fps=0)
    with pytest.raises(ValueError, match=r"Viewer: max_share must be a number in \(0, 1\], got 0"):
        Viewer(max_share=0)
    with Viewer() as viewer:
        with pytest.raises(ValueError, match=r"images must be \[H, W, C\] or \[N, H, W, C\].*got shape \(5, 5\)"):
            viewer.show(torch.zeros(5, 5))
        with pytest.raises(ValueError, match=r"C = 1, 3 or 4, got shape \(5, 5, 2\)"):
            viewer.show(torch.zeros(5, 5, 2))
        with pytest.raises(TypeError, match=r"float \(values in \[0, 1\]\) or uint8, got torch.int32"):
            viewer.show(torch.zeros(5, 5, 3, dtype=torch.int32))
        with pytest.raises(TypeError, match="torch tensors or numpy arrays, got list"):
            viewer.show([[0.0]])
        with pytest.raises(ValueError, match="empty list"):
            viewer.show([])
        with pytest.raises(ValueError, match=r"labels must be one string per image \(2\)"):
            viewer.show(torch.zeros(2, 5, 5, 3), labels=["one"])
        with pytest.raises(ValueError, match="one-element tensor, got shape"):
            viewer.plot("x", torch.zeros(3))
        with pytest.raises(TypeError, match="Viewer.plot: value must be a number"):
            viewer.plot("x", "1.0")
        assert viewer.frames == 0


NO_DISPLAY = """
import os, sys, torch
import glrast as dr
pos = torch.tensor([[[-1.0, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]])
rast, _ = dr.rasterize(dr.RasterizeGLContext(device="cpu"), pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 8))
assert rast[..., 3].sum() > 0
print("headless glfw", "glfw" in sys.modules)
for display in (None, ":4093"):  # none at all; one that no server answers
    if display:
        os.environ["DISPLAY"] = display
    try:
        dr.Viewer()
    except dr.ViewerUnavailableError as e:
        print(type(e).__mro__[1].__name__, e)
"""


def test_no_display_error_and_no_glfw_import():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-c", NO_DISPLAY], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "headless glfw False"
    assert lines[1].startswith("RuntimeError glrast.Viewer: cannot open a window: there is no display "
                               "(neither DISPLAY nor WAYLAND_DISPLAY is set). To fix: ")  # fmt: skip
    assert lines[2].startswith("RuntimeError glrast.Viewer: cannot open a window: glfw cannot initialise on display "
                               "':4093': X11: Failed to open display :4093")  # fmt: skip
    for line in lines[1:]:
        assert "desktop session" in line and "xvfb-run" in line and "--out" in line


@gpu_test
def test_cuda_images_show_like_cpu_images(xdisplay):
    image = CASES["rgba uint8"]
    with Viewer(title="glrast test cuda") as viewer:
        assert viewer.show([image.cuda(), image.float().cuda() / 255])
        assert_shows(viewer.screenshot(), [image, image], viewer.image_rects)


def test_due_says_whether_show_would_draw(xdisplay):
    image = torch.rand(8, 8, 3)
    with Viewer(max_fps=10, max_share=1.0) as viewer:
        assert viewer.due
        viewer.show(image)
        assert not viewer.due and viewer.frames == 1
        viewer.show(image)  # within the interval: nothing drawn
        assert viewer.frames == 1
        time.sleep(0.12)
        assert viewer.due
        viewer.show(image)
        assert viewer.frames == 2
        viewer.close()
        assert not viewer.due
