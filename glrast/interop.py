"""GL render target -> torch tensor.

CPU tensors: glReadPixels straight into the output tensor's memory (one copy).
CUDA tensors: read back through host memory, then copied to the device.
"""

from __future__ import annotations

from typing import Any

import torch


def read_attachment(pipeline: Any, attachment: int, out: torch.Tensor, viewport: tuple[int, int, int, int]) -> None:
    """Copy color attachment `attachment` of the pipeline's framebuffer, within
    `viewport`, into `out` ([H, W, 4] float32, contiguous)."""
    if out.device.type == "cpu":
        pipeline.fbo.read_into(out.numpy(), viewport=viewport, components=4, attachment=attachment, dtype="f4")
        return
    staging = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    pipeline.fbo.read_into(staging.numpy(), viewport=viewport, components=4, attachment=attachment, dtype="f4")
    out.copy_(staging, non_blocking=False)

