"""glrast.Viewer: a desktop window (glfw) that shows images and live curves.

One window, one OpenGL 3.3+ core context of its own, driven by ModernGL. `show()`
is meant to sit inside a training loop: it is rate-limited to `max_fps` (a call
between two frames only polls the window's events and returns), and it returns
False once the user closed the window. Images arrive as tensors (CPU or CUDA) or
numpy arrays; they are packed side by side into one RGBA8 canvas on their own
device, and the canvas reaches the window's texture in one transfer: a
glTexSubImage2D from host memory for CPU tensors, a device-to-device copy into
the CUDA-registered texture for CUDA tensors when the window's GL is NVIDIA's
(interop.TextureWriter); where it is not (Mesa, another vendor's GPU driving the
display, a virtual X server) nothing can reach that texture from the GPU, and the
canvas goes through host memory (said once in the log).

Contexts. glvnd allows one current context per thread across EGL and GLX, and
glrast's headless contexts (EGL) stay current between calls. Every GL call of the
viewer runs inside `activate()`, which releases the thread's EGL context, makes
the window's context current, and afterwards releases it and puts back the EGL
state (and any other glfw context) it found, so a RasterizeGLContext in either
mode never notices the window.

glfw is imported on the first Viewer, never by `import glrast`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import moderngl
import numpy as np
import torch

from . import egl, interop
from ._log import logger

_FIX = (
    "run it in a desktop session, or under a virtual X server (`xvfb-run -a python ...`), "
    "or save images to files instead (the examples' --out)"
)
_BACKGROUND = (0.12, 0.12, 0.13)
# show() and plot() in a tight loop process window events at most this often (seconds): polling
# costs more than a fast training step's share, and 100 times a second is prompt for any input.
_POLL_S = 0.01
_LABEL_PX = 16  # height of a label strip / text line, in window pixels
_PLOT_PX = 150  # height of the plot panel
_MIN_IMAGE_PX = 256  # small images are enlarged (by an integer factor) to about this height
_GAP_PX = 4  # between two images of a row
_CURVE_COLORS = ((0.98, 0.60, 0.20), (0.35, 0.75, 1.00), (0.55, 0.90, 0.45), (0.95, 0.45, 0.75), (0.85, 0.85, 0.4))


class ViewerUnavailableError(RuntimeError):
    """No window can be opened here: no display, or glfw cannot initialise or create an OpenGL 3.3 window."""


def _unavailable(cause: str) -> ViewerUnavailableError:
    return ViewerUnavailableError(f"glrast.Viewer: cannot open a window: {cause}. To fix: {_FIX}.")


# -- glfw, loaded on first use --------------------------------------------------------------------
_glfw_state: dict[str, Any] = {"module": None, "windows": 0, "errors": []}


def _glfw_error(code: int, description: bytes) -> None:
    text = description.decode(errors="replace") if isinstance(description, bytes) else str(description)
    _glfw_state["errors"].append(f"{text} (GLFW error 0x{code:x})")
    logger.debug("glfw: %s", text)


def _last_glfw_error(default: str) -> str:
    errors = _glfw_state["errors"]
    return errors[-1] if errors else default


def _open_glfw() -> Any:
    """The glfw module, initialised; counts one more window user."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise _unavailable("there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)")
    try:
        import glfw
    except ImportError as e:  # the package, or the GLFW library inside it
        raise _unavailable(f"glfw cannot be loaded ({e}); `pip install glfw`") from None
    if _glfw_state["windows"] == 0:
        _glfw_state["errors"].clear()
        glfw.set_error_callback(_glfw_error)
        if not glfw.init():
            where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            raise _unavailable(f"glfw cannot initialise on display {where!r}: {_last_glfw_error('unknown error')}")
    _glfw_state["module"] = glfw
    _glfw_state["windows"] += 1
    return glfw


def _close_glfw() -> None:
    _glfw_state["windows"] -= 1
    if _glfw_state["windows"] == 0:
        _glfw_state["module"].terminate()


# -- images -> one RGBA8 canvas ------------------------------------------------------------------
def _as_images(images: Any) -> list[torch.Tensor]:
    """The images of a show() call as a list of [H, W, C] tensors (not yet converted)."""
    if isinstance(images, (list, tuple)):
        items = [_as_tensor(x) for x in images]
        if not items:
            raise ValueError("Viewer.show: images is an empty list; expected at least one [H, W, C] image")
        if any(x.dim() != 3 for x in items):
            shapes = [tuple(x.shape) for x in items]
            raise ValueError(f"Viewer.show: a list must hold [H, W, C] images, got shapes {shapes}")
    else:
        x = _as_tensor(images)
        if x.dim() == 3:
            items = [x]
        elif x.dim() == 4:
            items = list(x.unbind(0))
            if not items:
                raise ValueError("Viewer.show: images has N = 0 images; expected [N, H, W, C] with N >= 1")
        else:
            raise ValueError(
                f"Viewer.show: images must be [H, W, C] or [N, H, W, C] (C = 1, 3 or 4), got shape {tuple(x.shape)}"
            )
    for x in items:
        if x.shape[-1] not in (1, 3, 4) or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"Viewer.show: images must be [H, W, C] with C = 1, 3 or 4, got shape {tuple(x.shape)}")
        if not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise TypeError(f"Viewer.show: images must be float (values in [0, 1]) or uint8, got {x.dtype}")
        if x.device.type not in ("cpu", "cuda") or x.device != items[0].device:
            raise ValueError(f"Viewer.show: images must all be on one CPU or CUDA device, got {x.device} "
                             f"and {items[0].device}")  # fmt: skip
    return items


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"Viewer.show: images must be torch tensors or numpy arrays, got {type(x).__name__}")


def compose(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """[Hmax, sum W, 4] uint8 on the images' device: the images side by side, each in rows
    [0, H) (glrast's row 0 = bottom), floats converted as GL converts to 8 bits: x clamped to
    [0, 1], times 255, rounded to the nearest integer (NaN: 0); C = 1 becomes grey, missing
    alpha is 255."""
    height = max(x.shape[0] for x in images)
    canvas = torch.zeros(height, sum(x.shape[1] for x in images), 4, dtype=torch.uint8, device=images[0].device)
    left = 0
    for x in images:
        h, w, c = x.shape
        if x.is_floating_point():
            # x * 255 + 0.5 truncated; the first op makes a copy, the others work in place on it
            x = x.float().mul(255).add_(0.5).clamp_(0, 255).nan_to_num_(0).to(torch.uint8)
        tile = canvas[:h, left : left + w]
        tile[..., :3] = x[..., :3] if c >= 3 else x[..., :1]
        tile[..., 3] = x[..., 3] if c == 4 else 255
        left += w
    return canvas


@dataclass(frozen=True)
class InputEvent:
    """One input event of the window (see `Viewer.input_events`).

    kind: 'key' (text: the character typed), 'drag' (button 0 = left, 1 = right, 2 = middle;
    dx, dy: cursor motion in window pixels, y down, while the button is held), 'scroll'
    (dy: wheel steps, positive away from the user).
    """

    kind: str
    text: str = ""
    button: int = -1
    dx: float = 0.0
    dy: float = 0.0


_VERTEX = """
#version 330
uniform vec4 rect;      // x0, y0, x1, y1 in normalized device coordinates
uniform vec4 uv_rect;   // u0, v0, u1, v1
uniform vec2 size_px;   // the rectangle's size in pixels
out vec2 uv;
out vec2 local_px;      // pixels from the rectangle's bottom-left corner
void main() {
    vec2 corner = vec2(gl_VertexID & 1, gl_VertexID >> 1);
    uv = mix(uv_rect.xy, uv_rect.zw, corner);
    local_px = corner * size_px;
    gl_Position = vec4(mix(rect.xy, rect.zw, corner), 0.0, 1.0);
}
"""
_FRAGMENT = """
#version 330
uniform sampler2D tex;
uniform int mask_mode;  // 0: RGBA image over a checkerboard; 1: text mask in `color`
uniform vec3 color;
in vec2 uv;
in vec2 local_px;
out vec4 frag;
void main() {
    vec4 t = texture(tex, uv);
    if (mask_mode == 1) {
        frag = vec4(color, t.r);
    } else {
        ivec2 square = ivec2(floor(local_px / 8.0));  // anchored to the image, not the window
        vec3 checker = vec3(((square.x + square.y) & 1) == 1 ? 0.45 : 0.35);
        frag = vec4(mix(checker, t.rgb, t.a), 1.0);
    }
}
"""
_LINE_VERTEX = """
#version 330
in vec2 pos;
void main() { gl_Position = vec4(pos, 0.0, 1.0); }
"""
_LINE_FRAGMENT = """
#version 330
uniform vec3 color;
out vec4 frag;
void main() { frag = vec4(color, 1.0); }
"""


class Viewer:
    """A desktop window showing images (and live curves), updated from a loop.

    width, height: window size in pixels; None: sized to the first images shown (small
        images enlarged by an integer factor, the whole kept on the screen).
    title: window title.
    max_fps: at most this many frames a second are uploaded and drawn (None: no limit, every
        call draws); `show()` calls in between return at once.
    max_share: with max_fps set, the largest share of the wall time that drawing may take: after
        a frame that took t seconds the next waits at least t / max_share (on software GL a
        frame can cost 10+ ms, which at 30 frames a second would slow a training loop by a third).
        The first frame, which also builds the window's GL objects, holds the next back by the
        max_fps interval only.

    The window opens with the first frame. Esc (or the window's close button) closes it.
    Raises ViewerUnavailableError (a RuntimeError) where no window can be opened.
    A Viewer belongs to the thread that creates it.
    """

    def __init__(self, width: int | None = None, height: int | None = None, title: str = "glrast",
                 max_fps: float | None = 30, max_share: float = 0.05) -> None:  # fmt: skip
        for name, value in (("width", width), ("height", height)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Viewer: {name} must be a positive int or None, got {value!r}")
        if max_fps is not None and not (isinstance(max_fps, (int, float)) and max_fps > 0):
            raise ValueError(f"Viewer: max_fps must be a positive number or None, got {max_fps!r}")
        if not (isinstance(max_share, (int, float)) and 0 < max_share <= 1):
            raise ValueError(f"Viewer: max_share must be a number in (0, 1], got {max_share!r}")
        self.max_fps = max_fps
        self.max_share = max_share
        self._interval = 0.0 if max_fps is None else 1.0 / max_fps
        self._hold = self._interval  # the wait after the last frame: the interval, or longer after a slow frame
        self._drawn = False  # a first frame was drawn: it also built the GL objects, so its time says nothing
        self._thread = threading.get_ident()
        self._fixed_size = (width, height) if width is not None and height is not None else None
        self._glfw = glfw = _open_glfw()
        try:
            self._window = self._create_window(glfw, width or 640, height or 480, title)
        except BaseException:
            _close_glfw()
            raise
        self.frames = 0  # show() calls that uploaded and drew their images
        self._last_upload = -math.inf  # show()'s clock
        self._last_poll = -math.inf
        self._last_frame = -math.inf  # any frame's: plot() redraws on its own only when show() is not called
        self._images: list[tuple[int, int, int]] = []  # (left column in the canvas, height, width)
        self._labels: list[str] = []
        self._curves: dict[str, list[Any]] = {}
        self._text_cache: dict[str, Any] = {}
        self._size_set: tuple[int, int] | None = None  # the natural size last given to the window
        self._events: list[InputEvent] = []
        self._buttons: set[int] = set()
        self._cursor: tuple[float, float] | None = None
        self.image_rects: list[tuple[int, int, int, int]] = []  # (x, y, w, h), framebuffer pixels, y down
        try:
            with self.activate():
                self._init_gl()
        except BaseException:
            self._destroy()
            raise
        for setter, callback in ((glfw.set_window_refresh_callback, self._on_refresh),
                                 (glfw.set_key_callback, self._on_key), (glfw.set_char_callback, self._on_char),
                                 (glfw.set_mouse_button_callback, self._on_button),
                                 (glfw.set_cursor_pos_callback, self._on_cursor),
                                 (glfw.set_scroll_callback, self._on_scroll)):  # fmt: skip
            setter(self._window, callback)

    # -- creation ------------------------------------------------------------------------------
    @staticmethod
    def _create_window(glfw: Any, width: int, height: int, title: str) -> Any:
        glfw.default_window_hints()
        for hint, value in ((glfw.CONTEXT_VERSION_MAJOR, 3), (glfw.CONTEXT_VERSION_MINOR, 3),
                            (glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE), (glfw.OPENGL_FORWARD_COMPAT, True),
                            (glfw.VISIBLE, False), (glfw.DOUBLEBUFFER, True)):  # fmt: skip
            glfw.window_hint(hint, value)
        # glfw makes the new context current while creating it: no EGL context may be current then.
        saved = egl.release_current()
        try:
            window = glfw.create_window(width, height, title, None, None)
        finally:
            if saved is not None:
                egl.make_current(saved)
        if not window:
            raise _unavailable(f"glfw cannot create a window with an OpenGL 3.3 core context: "
                               f"{_last_glfw_error('unknown error')}")  # fmt: skip
        return window

    def _init_gl(self) -> None:
        glfw = self._glfw
        glfw.swap_interval(0)  # never block show() on the display's refresh
        wayland = hasattr(glfw, "get_platform") and glfw.get_platform() == glfw.PLATFORM_WAYLAND
        self.gl = moderngl.create_context(require=330, **({"backend": "egl"} if wayland else {}))
        self._quad = self.gl.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self._quad_vao = self.gl.vertex_array(self._quad, [])
        self._line = self.gl.program(vertex_shader=_LINE_VERTEX, fragment_shader=_LINE_FRAGMENT)
        self._line_buffer = self.gl.buffer(reserve=8 * 4096, dynamic=True)
        self._line_vao = self.gl.vertex_array(self._line, [(self._line_buffer, "2f", "pos")])
        self._canvas: moderngl.Texture | None = None
        self._writer = interop.TextureWriter()
        vendor = self.gl.info["GL_VENDOR"]
        # Why CUDA images cannot go device to device (None: they can, as far as is known).
        self._no_interop: str | None = None if "NVIDIA" in vendor.upper() else f"the window's OpenGL is {vendor}'s"
        self._said_host_copy = False

    # -- contexts ------------------------------------------------------------------------------
    def _check_thread(self, what: str) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError(f"Viewer.{what}: this viewer was created on another thread; use it on that thread")

    @contextlib.contextmanager
    def activate(self) -> Iterator[moderngl.Context]:
        """The window's GL context made current for the body (see the module doc), e.g. to
        render into it with RasterizeGLContext(gl_context=viewer.gl, mode='manual')."""
        glfw = self._glfw
        saved_egl = egl.release_current()
        saved_glfw = glfw.get_current_context()
        glfw.make_context_current(self._window)
        try:
            yield getattr(self, "gl", None)
        finally:
            glfw.make_context_current(saved_glfw)
            if saved_egl is not None:
                egl.make_current(saved_egl)

    # -- public API ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the window was closed (by the user, or by `close()`)."""
        return self._window is None

    def show(self, images: Any, labels: Sequence[str] | None = None) -> bool:
        """Show images side by side; returns False once the window was closed.

        images: [H, W, C] or [N, H, W, C] tensor or numpy array, or a list of [H, W, C];
            C = 1 (grey), 3 (RGB) or 4 (RGBA, shown over a checkerboard); float in [0, 1]
            or uint8; CPU or CUDA. Row 0 is the bottom row (glrast's convention), shown upright.
        labels: None, or one string per image, drawn above it.
        Uploads and draws at most max_fps times a second; calls in between only process
        the window's events (at most 100 times a second). See `due` to skip preparing images.
        """
        self._check_thread("show")
        items = _as_images(images)
        if labels is not None and (isinstance(labels, str) or len(labels) != len(items)):
            raise ValueError(f"Viewer.show: labels must be one string per image ({len(items)}), got {labels!r}")
        now = time.perf_counter()
        if not self._poll(now) or not self._due(now):
            return not self.closed
        canvas = compose(items)
        with self.activate():
            self._upload(canvas)
            left = 0
            self._images = []
            for x in items:
                self._images.append((left, x.shape[0], x.shape[1]))
                left += x.shape[1]
            self._labels = [str(label) for label in labels] if labels is not None else []
            self._frame(now)
        self._last_upload = now
        self.frames += 1
        self._spent(now)
        return True

    @property
    def due(self) -> bool:
        """True when the next `show()` would upload and draw (the rate limit lets it): a loop
        that prepares images only for the window can skip that work when it is not."""
        return self._due(time.perf_counter()) and not self.closed

    def _due(self, now: float) -> bool:
        return now - self._last_upload >= self._hold

    def _spent(self, start: float) -> None:
        """A frame begun at `start` has been drawn: hold the next one back so that drawing stays
        within max_share of the time (only where max_fps limits the rate at all)."""
        if self.max_fps is not None and self._drawn:
            self._hold = max(self._interval, (time.perf_counter() - start) / self.max_share)
        self._drawn = True

    def plot(self, name: str, value: Any) -> bool:
        """Append `value` (a number or a one-element tensor, e.g. a loss) to the curve `name`,
        drawn under the images against the call count; returns False once the window was closed.
        Tensors are read at the next frame, so a CUDA loss costs no synchronisation here."""
        self._check_thread("plot")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                shape = tuple(value.shape)
                raise ValueError(f"Viewer.plot: value must be a number or a one-element tensor, got shape {shape}")
            value = value.detach()
        elif not isinstance(value, (int, float, np.number)):
            raise TypeError(f"Viewer.plot: value must be a number or a one-element tensor, got {type(value).__name__}")
        self._curves.setdefault(str(name), []).append(value)
        now = time.perf_counter()
        # A loop that shows images gets its curves drawn with them; only one that has not lately
        # (in two frames' time: a loop may call show() only when it is `due`) gets frames from plot().
        showing = now - self._last_upload < 2 * max(self._hold, 0.05)
        if self._poll(now) and not showing and now - self._last_frame >= self._hold:
            with self.activate():
                self._frame(now)
            self._spent(now)
        return not self.closed

    def screenshot(self) -> np.ndarray:
        """[H, W, 3] uint8 (row 0 = top, as on the screen and in a PNG): the window's
        framebuffer, drawn again and read back before it is shown."""
        self._check_thread("screenshot")
        if self.closed:
            raise RuntimeError("Viewer.screenshot: the window is closed")
        with self.activate():
            width, height = self._draw()
            pixels = self.gl.screen.read(viewport=(0, 0, width, height), components=3)
            self._glfw.swap_buffers(self._window)
        return np.frombuffer(pixels, np.uint8).reshape(height, width, 3)[::-1].copy()

    def wait(self, timeout: float) -> bool:
        """Sleep until a window event arrives or `timeout` seconds pass; False once closed."""
        self._check_thread("wait")
        if self.closed:
            return False
        self._glfw.wait_events_timeout(timeout)
        return self._poll(None)

    def input_events(self) -> list[InputEvent]:
        """The key presses, mouse drags and wheel steps since the last call (Esc is not
        among them: it closes the window)."""
        events, self._events = self._events, []
        return events

    def set_title(self, title: str) -> None:
        if not self.closed:
            self._glfw.set_window_title(self._window, title)

    def close(self) -> None:
        """Close the window and free its GL context (idempotent)."""
        if self._window is not None:
            self._check_thread("close")
            self._destroy()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_window", None) is not None and threading.get_ident() == self._thread:
            with contextlib.suppress(Exception):
                self._destroy()

    # -- events --------------------------------------------------------------------------------
    def _poll(self, now: float | None) -> bool:
        """Process window events, unless they were processed less than _POLL_S before `now` (None:
        process them); closes the window if the user asked to. False once closed."""
        if self._window is None:
            return False
        if now is not None and now - self._last_poll < _POLL_S:
            return True
        self._last_poll = time.perf_counter() if now is None else now
        self._glfw.poll_events()
        if self._window is not None and self._glfw.window_should_close(self._window):
            self._destroy()
        return self._window is not None

    def _on_refresh(self, window: Any) -> None:
        """The window system lost the window's pixels (exposed, resized): draw the last frame again."""
        if self._last_frame > -math.inf:
            with self.activate():
                self._draw()
                self._glfw.swap_buffers(self._window)

    def _on_key(self, window: Any, key: int, scancode: int, action: int, mods: int) -> None:
        if key == self._glfw.KEY_ESCAPE and action == self._glfw.PRESS:
            self._glfw.set_window_should_close(window, True)

    def _on_char(self, window: Any, codepoint: int) -> None:
        self._events.append(InputEvent("key", text=chr(codepoint)))

    def _on_button(self, window: Any, button: int, action: int, mods: int) -> None:
        (self._buttons.add if action == self._glfw.PRESS else self._buttons.discard)(button)

    def _on_cursor(self, window: Any, x: float, y: float) -> None:
        if self._cursor is not None:
            for button in sorted(self._buttons):
                dx, dy = x - self._cursor[0], y - self._cursor[1]
                last = self._events[-1] if self._events else None
                if last is not None and last.kind == "drag" and last.button == button:  # merge motion
                    self._events[-1] = InputEvent("drag", button=button, dx=last.dx + dx, dy=last.dy + dy)
                else:
                    self._events.append(InputEvent("drag", button=button, dx=dx, dy=dy))
        self._cursor = (x, y)

    def _on_scroll(self, window: Any, dx: float, dy: float) -> None:
        self._events.append(InputEvent("scroll", dy=dy))

    # -- drawing (the window's context is current) ---------------------------------------------
    def _upload(self, canvas: torch.Tensor) -> None:
        height, width = canvas.shape[:2]
        if self._canvas is None or self._canvas.width < width or self._canvas.height < height:
            self._writer.reset()
            if self._canvas is not None:
                self._canvas.release()
            size = (max(width, self._canvas.width if self._canvas else 0),
                    max(height, self._canvas.height if self._canvas else 0))  # fmt: skip
            self._canvas = self.gl.texture(size, 4)
            self._canvas.filter = (moderngl.LINEAR, moderngl.NEAREST)  # smooth when shrunk, crisp when enlarged
        if canvas.device.type == "cuda" and self._no_interop is None:
            try:
                self._writer.write(self._canvas, canvas)
                return
            except RuntimeError as e:  # e.g. the display is driven by another GPU than the tensors'
                self._writer.reset()
                self._no_interop = str(e)
        if canvas.device.type == "cuda":
            if not self._said_host_copy:
                logger.info("Viewer: CUDA images are copied through host memory: %s", self._no_interop)
                self._said_host_copy = True
            canvas = canvas.cpu()
        self._writer.write(self._canvas, canvas)

    def _natural_size(self) -> tuple[int, int]:
        glfw = self._glfw
        monitor = glfw.get_primary_monitor()
        screen = glfw.get_monitor_workarea(monitor)[2:] if monitor else (1920, 1080)
        extra = (_LABEL_PX if self._labels else 0) + (_PLOT_PX if self._curves else 0)
        if not self._images:
            return 640, extra or 480
        height = max(h for _, h, _ in self._images)
        width = sum(w for _, _, w in self._images)
        gaps = _GAP_PX * (len(self._images) - 1)
        room_w, room_h = int(0.9 * screen[0]) - gaps, int(0.9 * screen[1]) - extra
        scale = max(1, min(_MIN_IMAGE_PX // height, room_w // width, room_h // height))
        return min(width * scale, room_w) + gaps, min(height * scale, room_h) + extra

    def _resize_to_content(self) -> None:
        """Give the window its natural size, unless the caller fixed one or the user resized it."""
        glfw = self._glfw
        if self._fixed_size is not None:
            size = self._fixed_size
        else:
            size = self._natural_size()
            if self._size_set is not None and glfw.get_window_size(self._window) != self._size_set:
                return  # the user resized the window: keep their size
        if size != self._size_set:
            glfw.set_window_size(self._window, *size)
            self._size_set = size
        if not glfw.get_window_attrib(self._window, glfw.VISIBLE):
            glfw.show_window(self._window)

    def _frame(self, now: float) -> None:
        self._resize_to_content()
        self._draw()
        self._glfw.swap_buffers(self._window)
        self._last_frame = now

    def _draw(self) -> tuple[int, int]:
        """Draw everything into the back buffer; returns the framebuffer size."""
        width, height = self._glfw.get_framebuffer_size(self._window)
        gl = self.gl
        gl.screen.use()
        gl.viewport = (0, 0, width, height)
        gl.clear(*_BACKGROUND)
        if width == 0 or height == 0:
            return width, height
        label_px = _LABEL_PX if self._labels else 0
        plot_px = min(_PLOT_PX, height // 2) if self._curves else 0
        self.image_rects = self._layout(width, height - label_px - plot_px, label_px)
        if self._canvas is not None:
            self._canvas.use(0)
            self._quad["tex"] = 0
            self._quad["mask_mode"] = 0
            for (left, h, w), (x, y, rw, rh) in zip(self._images, self.image_rects):
                cw, ch = self._canvas.size
                self._rect(width, height, x, y, rw, rh, (left / cw, 0, (left + w) / cw, h / ch))
        for label, (x, y, rw, _) in zip(self._labels, self.image_rects):
            self._text(width, height, label, x + rw // 2, y - label_px, (0.9, 0.9, 0.9), center=True)
        if plot_px:
            self._draw_plot(width, height, plot_px)
        return width, height

    def _layout(self, width: int, height: int, top: int) -> list[tuple[int, int, int, int]]:
        """Image rectangles (x, y, w, h) in framebuffer pixels (y down), the row scaled to fit
        width x height below `top` pixels: by an integer factor when enlarged."""
        if not self._images or height <= 0:
            return []
        gaps = _GAP_PX * (len(self._images) - 1)
        row_w = sum(w for _, _, w in self._images)
        row_h = max(h for _, h, _ in self._images)
        scale = min(max(width - gaps, 1) / row_w, height / row_h)
        scale = math.floor(scale) if scale >= 1 else scale
        x = (width - round(row_w * scale) - gaps) // 2
        rects = []
        for k, (left, h, w) in enumerate(self._images):
            x0, x1 = x + k * _GAP_PX + round(left * scale), x + k * _GAP_PX + round((left + w) * scale)
            rects.append((x0, top, x1 - x0, round(h * scale)))
        return rects

    def _rect(self, fb_w: int, fb_h: int, x: int, y: int, w: int, h: int, uv: tuple[float, ...]) -> None:
        """Draw the bound texture's `uv` rectangle into pixels (x, y, w, h), y down."""
        self._quad["rect"] = (2 * x / fb_w - 1, 1 - 2 * (y + h) / fb_h, 2 * (x + w) / fb_w - 1, 1 - 2 * y / fb_h)
        self._quad["uv_rect"] = uv
        self._quad["size_px"] = (w, h)
        self._quad_vao.render(moderngl.TRIANGLE_STRIP, vertices=4)

    def _text(self, fb_w: int, fb_h: int, text: str, x: int, y: int, color: tuple[float, float, float],
              center: bool = False) -> int:  # fmt: skip
        """Draw one line of text with its top-left (or top-centre) at (x, y); returns its width."""
        texture = self._text_cache.get(text)
        if texture is None:
            if len(self._text_cache) > 64:
                for old in self._text_cache.values():
                    old.release()
                self._text_cache.clear()
            mask = _text_mask(text, _LABEL_PX)
            texture = self.gl.texture((mask.shape[1], mask.shape[0]), 1, mask.tobytes())
            texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
            self._text_cache[text] = texture
        texture.use(0)
        self._quad["mask_mode"] = 1
        self._quad["color"] = color
        self.gl.enable(moderngl.BLEND)
        left = x - texture.width // 2 if center else x
        self._rect(fb_w, fb_h, left, y, texture.width, texture.height, (0, 0, 1, 1))
        self.gl.disable(moderngl.BLEND)
        self._quad["mask_mode"] = 0
        return texture.width

    def _draw_plot(self, fb_w: int, fb_h: int, plot_px: int) -> None:
        """The curves in a panel along the bottom: shared axes, log scale when all values are
        positive and span more than a decade; a legend with each curve's last value."""
        curves = {name: _values(points) for name, points in self._curves.items()}
        for name, values in curves.items():
            self._curves[name] = list(values)  # tensors read once
        finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()] or [np.zeros(0)])
        if finite.size == 0:
            return
        log = bool(finite.min() > 0 and finite.max() > 10 * finite.min())
        transform = np.log10 if log else (lambda v: v)
        lo, hi = float(transform(finite.min())), float(transform(finite.max()))
        hi = hi if hi > lo else lo + 1.0
        steps = max(len(v) for v in curves.values())
        margin = 6
        x0, x1 = margin, fb_w - margin
        y0, y1 = fb_h - plot_px + _LABEL_PX + 2, fb_h - margin  # y down
        self._lines(fb_w, fb_h, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], float), (0.4, 0.4, 0.4))
        legend_x = x0 + 4
        for k, (name, values) in enumerate(curves.items()):
            color = _CURVE_COLORS[k % len(_CURVE_COLORS)]
            keep = np.linspace(0, len(values) - 1, min(len(values), 2 * (x1 - x0))).round().astype(int)
            v = values[keep]
            ok = np.isfinite(v)
            xs = x0 + (x1 - x0) * keep / max(steps - 1, 1)
            ys = y1 - (y1 - y0) * (transform(np.where(ok, v, 1.0)) - lo) / (hi - lo)
            if ok.sum() > 1:
                self._lines(fb_w, fb_h, np.stack([xs[ok], ys[ok]], 1), color)
            legend = f"{name} {values[-1]:.3g}"
            legend_x += self._text(fb_w, fb_h, legend, legend_x, fb_h - plot_px, color) + 12
        scale = f"{'log' if log else 'linear'} scale, {_fmt(lo, log)} .. {_fmt(hi, log)}, {steps} steps"
        self._text(fb_w, fb_h, scale, legend_x, fb_h - plot_px, (0.6, 0.6, 0.6))

    def _lines(self, fb_w: int, fb_h: int, points: np.ndarray, color: tuple[float, float, float]) -> None:
        """A line strip through pixel positions [P, 2] (y down)."""
        ndc = np.stack([2 * points[:, 0] / fb_w - 1, 1 - 2 * points[:, 1] / fb_h], 1).astype("f4")
        if ndc.nbytes > self._line_buffer.size:
            self._line_buffer.orphan(ndc.nbytes)
        self._line_buffer.write(ndc.tobytes())
        self._line["color"] = color
        self._line_vao.render(moderngl.LINE_STRIP, vertices=len(ndc))

    def _destroy(self) -> None:
        """Destroy the window; its GL context, and every GL object in it, goes with it."""
        if self._window is None:
            return
        try:
            if getattr(self, "_writer", None) is not None:
                with self.activate():
                    self._writer.reset()  # CUDA registrations must go before their texture
        finally:
            window, self._window, self.gl = self._window, None, None
            self._glfw.destroy_window(window)
            _close_glfw()


def _values(points: list[Any]) -> np.ndarray:
    tensors = [p for p in points if isinstance(p, torch.Tensor)]
    if tensors:
        read = iter(torch.stack([t.reshape(()).float() for t in tensors]).cpu().tolist())
        points = [next(read) if isinstance(p, torch.Tensor) else p for p in points]
    return np.asarray(points, dtype=np.float64)


def _fmt(value: float, log: bool) -> str:
    return f"{10**value:.3g}" if log else f"{value:.3g}"


def _text_mask(text: str, height: int) -> np.ndarray:
    """[h, w] uint8 coverage of `text` in pillow's default font, rows bottom-up (as GL stores them).
    Put together from cached glyphs: the legend and the scale line change every frame, and laying
    out a whole line in pillow costs more than a frame's drawing."""
    glyphs = [_glyph(ch, height) for ch in text]
    starts, pen = [], 1.0
    for _, bearing, advance in glyphs:
        starts.append(round(pen + bearing))
        pen += advance
    shift = max(0, -min(starts, default=0))
    width = max([round(pen)] + [x + g.shape[1] for (g, _, _), x in zip(glyphs, starts)]) + shift + 1
    mask = np.zeros((height, width), np.uint8)
    for (glyph, _, _), x in zip(glyphs, starts):
        region = mask[:, x + shift : x + shift + glyph.shape[1]]
        np.maximum(region, glyph, out=region)  # neighbours' antialiased edges may overlap
    return np.ascontiguousarray(mask[::-1])


@functools.lru_cache(maxsize=1024)
def _glyph(ch: str, height: int) -> tuple[np.ndarray, int, float]:
    """One character: its coverage [height, w] (rows top-down), where it starts relative to the pen
    (its left bearing, negative where it reaches back), and how far it moves the pen."""
    from PIL import Image, ImageDraw

    font = _font(height - 3)
    x0, _, x1, _ = font.getbbox(ch)
    bearing = min(x0, 0)
    image = Image.new("L", (max(1, x1 - bearing), height))
    ImageDraw.Draw(image).text((-bearing, 0), ch, font=font, fill=255)
    return np.asarray(image), bearing, font.getlength(ch)


@functools.lru_cache(maxsize=4)
def _font(size: int) -> Any:
    """Pillow's default font at `size` pixels (loading it costs more than drawing with it)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


_default: dict[str, Viewer] = {}


def show(images: Any, labels: Sequence[str] | None = None) -> bool:
    """`Viewer.show` on one viewer opened on first use (see Viewer); False once it was closed."""
    viewer = _default.get("viewer")
    if viewer is None:
        viewer = _default["viewer"] = Viewer()
    return viewer.show(images, labels)
