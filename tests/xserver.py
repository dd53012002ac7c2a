"""A private X server (Xvfb) for the window tests, and the tools that drive and photograph its
windows from outside the process under test: xdotool (real X input events through XTEST) and
ImageMagick's `import` (a screenshot of a window, read from the X server)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable

import numpy as np

TOOLS = {"Xvfb": "xvfb", "xdotool": "xdotool", "import": "imagemagick"}


class XServer:
    """Xvfb on a free display number (it picks one itself: -displayfd), 1280x1024, 24 bits."""

    def __init__(self) -> None:
        missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                f"the window tests need {', '.join(missing)}: apt-get install {' '.join(missing)} "
                "(make test installs them: make system-packages)"
            )
        read, write = os.pipe()
        self.process = subprocess.Popen(
            # -noreset: an X server resets when its last client leaves, refusing connections meanwhile
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-noreset"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()  # written once the server accepts connections
        if not number:
            self.process.kill()
            raise RuntimeError(f"Xvfb did not start (exit status {self.process.wait()})")
        self.display = f":{number}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        return {**env, "DISPLAY": self.display, **extra}

    def tool(self, *args: str) -> str:
        result = subprocess.run(args, env=self.env(), capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def find_window(self, title: str, timeout: float = 60.0) -> int:
        """The X id of the first visible window whose title contains `title`."""
        deadline = time.monotonic() + timeout
        while True:
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], env=self.env(),
                                   capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
            if found:
                return int(found[0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no window titled {title!r} appeared within {timeout} s")
            time.sleep(0.1)

    def title(self, window: int) -> str:
        return self.tool("xdotool", "getwindowname", str(window)).strip()

    def screenshot(self, window: int) -> np.ndarray:
        """[H, W, 3] uint8, row 0 = top: the window's pixels as the X server has them."""
        from PIL import Image

        png = subprocess.run(["import", "-window", str(window), "png:-"], env=self.env(), capture_output=True,
                             timeout=30, check=True).stdout  # fmt: skip
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def key(self, window: int, *keys: str) -> None:
        """Focus the window, then press and release each key (XTEST: as from a keyboard)."""
        self.tool("xdotool", "windowfocus", "--sync", str(window))
        self.tool("xdotool", "key", "--delay", "30", *keys)

    def drag(self, window: int, button: int, start: tuple[int, int], end: tuple[int, int]) -> None:
        """Press `button` (1 left, 3 right) at `start`, move to `end` in steps, release (window pixels)."""
        args = ["xdotool", "mousemove", "--window", str(window), str(start[0]), str(start[1]), "mousedown", str(button)]
        for k in range(1, 5):
            x = start[0] + (end[0] - start[0]) * k // 4
            y = start[1] + (end[1] - start[1]) * k // 4
            args += ["sleep", "0.05", "mousemove", "--window", str(window), str(x), str(y)]
        self.tool(*args, "sleep", "0.05", "mouseup", str(button))

    def scroll(self, window: int, at: tuple[int, int], steps: int) -> None:
        """Wheel steps at `at`: positive away from the user (X button 4), negative towards (5)."""
        button = "4" if steps > 0 else "5"
        self.tool("xdotool", "mousemove", "--window", str(window), str(at[0]), str(at[1]),
                  "click", "--repeat", str(abs(steps)), "--delay", "30", button)  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `predicate` until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)
