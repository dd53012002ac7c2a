"""Data-parallel fitting with torch.distributed (examples/distributed_fit.py): two Gloo
ranks on this machine, started by torchrun, take the same steps as one process over
all the views."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glrast.cli import load_example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_two_ranks_take_the_steps_of_one_process(tmp_path):
    steps = ["--steps", "4", "--batch", "8", "--views", "16", "--res", "24"]
    res = _torchrun(2, str(EXAMPLES / "distributed_fit.py"), *steps, "--record", str(tmp_path / "two.pt"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "distributed_fit: 2 rank(s)" in res.stdout
    two = torch.load(tmp_path / "two.pt")
    single = load_example("distributed_fit")
    single.run(steps=4, batch=8, views=16, res=24, record=tmp_path / "one.pt", device="cpu", quiet=True)
    one = torch.load(tmp_path / "one.pt")
    assert two["result"]["world_size"] == 2 and one["result"]["world_size"] == 1
    # The ranks' gradients, averaged by DDP, are the one process's gradients over all the views,
    # summed in another order. At the first step (same parameters) that is float32 rounding only:
    # relative error 1e-5. Later the parameters differ by rounding, and a pixel pair whose
    # silhouette decision sits on a boundary can flip: relative error (in norm) 1e-3, parameters
    # within a tenth of the learning rate (0.01) after four Adam steps.
    for step, (g_two, g_one) in enumerate(zip(two["grads"], one["grads"], strict=True)):
        for a, b in zip(g_two, g_one):
            assert b.norm() > 0
            assert (a - b).norm() <= (1e-5 if step == 0 else 1e-3) * b.norm(), f"step {step}"
    torch.testing.assert_close(two["offset"], one["offset"], atol=1e-3, rtol=0)
    torch.testing.assert_close(two["color"], one["color"], atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=0)


def test_nproc_starts_the_ranks_through_torchrun(capfd):
    """`glrast demo distributed --nproc 2` (the example's --nproc) runs torchrun itself; an uneven
    split of the batch fails on every rank with the reason, and the exit status says so."""
    with pytest.raises(SystemExit) as failed:
        load_example("distributed_fit").main(["--nproc", "2", "--steps", "1", "--batch", "3", "--views", "8"])
    assert failed.value.code != 0
    assert "--batch 3 must be a multiple of the 2 ranks" in capfd.readouterr().err
