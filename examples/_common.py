"""Output and command-line plumbing shared by the examples: upright PNGs, loss plots,
progress bars, the common options, the --display window. Not part of glrast's API."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

import glrast
from glrast._progress import progress_bar as bar  # the examples' progress: tqdm on a terminal, lines in logs


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser(name: str, doc: str | None, steps: int, res: int) -> argparse.ArgumentParser:
    """An argument parser with the options every example shares (--out, --steps, --res, --device, --seed)."""
    p = argparse.ArgumentParser(
        prog=f"{name}.py", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    out = Path("out") / name
    p.add_argument("--out", type=Path, default=out, help=f"folder for the PNGs and the plot (default {out})")
    p.add_argument("--steps", type=positive_int, default=steps, help=f"optimization steps (default {steps})")
    p.add_argument("--res", type=positive_int, default=res, help=f"image resolution in pixels (default {res})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--display", action="store_true",
                   help="show target, current and difference live in a window, with the loss curve")  # fmt: skip
    return p


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LiveDisplay:
    """--display: target, current and their difference side by side in a glrast.Viewer window,
    updated live (at most `max_fps` frames a second, so training hardly slows down), and the loss
    curve under them. Without a display it says why in one line and does nothing else: the
    example goes on and writes its files as always. Closing the window stops the display only."""

    def __init__(self, enabled: bool, title: str, max_fps: float = 30, max_share: float = 0.02) -> None:
        self.viewer: glrast.Viewer | None = None
        if enabled:
            try:
                # max_share: drawing takes at most 2 % of the time, which binds only on software GL
                # (a 6 ms frame there: a frame every 0.3 s); on a GPU max_fps does
                self.viewer = glrast.Viewer(title=title, max_fps=max_fps, max_share=max_share)
            except glrast.ViewerUnavailableError as e:
                print(f"--display: {e} Writing files only.", flush=True)

    def update(self, target: torch.Tensor, current: torch.Tensor, loss: float, curve: str = "loss") -> None:
        """target, current: [H, W, C] images in [0, 1], row 0 = bottom; loss: this step's value."""
        if self.viewer is None:
            return
        open_ = self.viewer.plot(curve, loss)
        if open_ and self.viewer.due:  # the difference image is made only for frames drawn
            target, current = target.detach(), current.detach()
            open_ = self.viewer.show([target, current, (target - current).abs()],
                                     labels=("target", "current", "|target - current|"))  # fmt: skip
        if not open_:
            self._closed()

    def hold(self, images: Sequence[torch.Tensor], labels: Sequence[str]) -> None:
        """Show `images` until the user closes the window (Esc or the close button)."""
        if self.viewer is None:
            return
        print("--display: close the window (or press Esc) to go on", flush=True)
        while self.viewer.show(images, labels):
            self.viewer.wait(0.1)
        self._closed()

    def _closed(self) -> None:
        print("--display: the window was closed", flush=True)
        self.viewer = None

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()
            self.viewer = None

    def __enter__(self) -> LiveDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(steps: int, desc: str, quiet: bool) -> Iterator[int]:
    """range(steps) with a progress bar (see `bar`)."""
    with bar(steps, desc, quiet) as b:
        for step in range(steps):
            yield step
            b.update()


def _to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return (np.clip(image[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_images(path: Path, images: Sequence[torch.Tensor | np.ndarray], scale: int = 1) -> None:
    """Write images side by side as one PNG, upright.

    Each image is [H, W, C] in [0, 1] as glrast renders it (row 0 = bottom), so rows are
    flipped; all must have the same height. `scale` enlarges pixels (nearest) for tiny images.
    """
    from PIL import Image

    gap = np.full((images[0].shape[0], max(1, images[0].shape[0] // 32), 3), 255, np.uint8)
    tiles = []
    for k, image in enumerate(images):
        tiles += [gap] if k else []
        tiles.append(_to_uint8(image)[::-1])
    row = np.concatenate(tiles, axis=1)
    if scale > 1:
        row = row.repeat(scale, axis=0).repeat(scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(row)).save(path)


def save_plot(path: Path, curves: dict[str, Sequence[float]], ylabel: str, log: bool = True) -> None:
    """Line plot of one or more curves against the step number (matplotlib, no display needed)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, values in curves.items():
        ax.plot(np.arange(len(values)), values, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))
