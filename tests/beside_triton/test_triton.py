"""glrast beside triton (which torch's CUDA builds bring along, and torch._dynamo imports,
e.g. on the first optimizer step), in both import orders: a GL context, a render, then
`import triton` and Adam steps through the renders, or triton first. Mesa's GL driver
carries its own LLVM; without glrast loading triton's library first, `import triton`
after a context died with SIGSEGV. Run by `make test-triton` in .venv-triton
(tests/beside_triton/requirements.txt); each order runs in its own interpreter, since the
failure is a crash."""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import torch
import glrast as dr
if sys.argv[1] == "triton first":
    import triton
ctx = dr.RasterizeGLContext(device="cpu")
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
def coverage(pos):
    rast, _ = dr.rasterize(ctx, pos, tri, (32, 32))
    return rast, dr.antialias((rast[..., 3:] > 0).float(), rast, pos, tri)
rast, target = coverage(torch.tensor([[[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0, 0.5, 0, 1]]]))
c = (torch.arange(32) + 0.5) / 16 - 1  # pixel centres; none lies on an edge of this triangle
y, x = torch.meshgrid(c, c, indexing="ij")
inside = (y > -0.5) & (y < 0.5 - 2 * x) & (y < 0.5 + 2 * x)
import triton
pos = torch.nn.Parameter(torch.tensor([[[-0.6, -0.4, 0, 1], [0.4, -0.6, 0, 1], [0.1, 0.6, 0, 1]]]))
opt = torch.optim.Adam([pos], lr=0.01)
losses = []
for _ in range(30):
    opt.zero_grad()
    loss = (coverage(pos)[1] - target).square().mean()
    loss.backward()
    opt.step()
    losses.append(loss.item())
covered = rast[0, ..., 3] > 0
print(json.dumps({"triton": triton.__version__, "wrong_pixels": int((covered != inside).sum()),
                  "covered": int(covered.sum()), "losses": losses}))
"""


@pytest.mark.parametrize("order", ["context first", "triton first"])
def test_context_render_and_adam_beside_triton(order):
    res = subprocess.run([sys.executable, "-c", SCRIPT, order], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"exit {res.returncode} (-11 = SIGSEGV)\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["triton"].startswith("3.")
    assert out["covered"] == 128 and out["wrong_pixels"] == 0  # the pixel centres inside the triangle
    assert out["losses"][-1] < 0.5 * out["losses"][0]  # Adam moves the triangle onto the target
