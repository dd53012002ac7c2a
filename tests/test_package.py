"""`pip install .` (not editable) gives a working package: kernels, shaders and examples ship inside it."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE = """
import torch, glrast as dr, glrast.kernels as k, glrast._resources as r
assert '{target}' in dr.__file__, dr.__file__
assert str(k.csrc_dir()).startswith('{target}') and str(r.resource_dir('shaders')).startswith('{target}')
ctx = dr.RasterizeGLContext(device='cpu')
pos = torch.tensor([[[-1.0, -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]]])
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
rast, _ = dr.rasterize(ctx, pos, tri, (4, 4))
out, _ = dr.interpolate(torch.ones(3, 1), rast, tri)
assert out.sum().item() == 16
print('ok', sorted(p.name for p in k.csrc_dir().iterdir()))
"""


def test_non_editable_install_works_outside_the_checkout(tmp_path):
    # Built from a clean copy: pip builds in the source tree, and a stale build/ left in
    # the checkout (say, with a module deleted since) would otherwise end up in the wheel.
    source = tmp_path / "src"
    local = (".*", "build", "dist", "out", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*local))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    subprocess.run(
        [*pip, "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    for rel in ["glrast/csrc/common.h", "glrast/csrc/raster.cu", "glrast/shaders/rasterize.frag",
                "glrast/examples/cube.py", "glrast/benchmarks/bench_raster.py"]:
        assert (target / rel).is_file(), rel
    env = {"PYTHONPATH": str(target), "GLRAST_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-c", SMOKE.format(target=target)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
