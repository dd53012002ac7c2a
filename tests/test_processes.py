"""Contexts and processes: children started with fork (after the parent rendered,
chains of forks, torch DataLoader workers), spawn and forkserver render exactly what
the parent renders; a context inherited through fork and a pickled context fail with
clear errors. Every multi-process case runs in a subprocess with a timeout, so that
a hang fails the test instead of stalling the suite."""

import json
import multiprocessing as mp
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import glrast as dr
from glrast import context, egl

JOBS = Path(__file__).resolve().parent / "process_jobs.py"
TIMEOUT_S = 240


def run_job(*args: str) -> list[dict]:
    try:
        res = subprocess.run(
            [sys.executable, str(JOBS), *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(args)}: no answer within {TIMEOUT_S} s (a hang)\n{e.stderr}")
    assert res.returncode == 0, res.stdout + res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def assert_same_renders(rows: list[dict]) -> None:
    assert [row["shift"] for row in rows] == [0.0, 0.1, 0.2], rows
    for row in rows:
        assert row["rast"] == 0.0 and row["image"] == 0.0, row  # same driver, same kernels: bit-identical
        assert row["pos_grad"] < 1e-5 and row["col_grad"] < 1e-5, row  # summation order may differ


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_render_what_the_parent_renders(method):
    # the parent renders first; then a child, its child and that one's child each render
    assert_same_renders(run_job("chain", method))


def test_forked_child_renders_after_the_parent_released_its_context():
    assert_same_renders(run_job("chain", "fork", "release"))


def test_dataloader_fork_workers_render():
    assert_same_renders(run_job("dataloader", "fork"))


def test_context_inherited_through_fork_is_unusable():
    (row,) = run_job("inherited", "fork")
    message = row["message"]
    assert message.startswith("RuntimeError: RasterizeGLContext: this context belongs to process"), message
    assert "inherited it through fork()" in message and "Create a new RasterizeGLContext in this process" in message


def test_context_cannot_be_pickled(cpu_glctx):
    with pytest.raises(TypeError, match=r"RasterizeGLContext cannot be pickled.*one RasterizeGLContext per process"):
        pickle.dumps(cpu_glctx)


def test_context_cannot_be_sent_to_a_spawned_worker(cpu_glctx):
    proc = mp.get_context("spawn").Process(target=print, args=(cpu_glctx,))
    with pytest.raises(TypeError, match="one RasterizeGLContext per process"):
        proc.start()


def test_forked_child_cannot_reopen_a_cuda_devices_gl(monkeypatch):
    monkeypatch.setattr(egl, "inherited_display", lambda index: True)
    with pytest.raises(RuntimeError, match=r"forked from one that had already opened EGL device 0.*'spawn'"):
        context._create_egl_context(0)


def test_forked_child_without_a_fork_safe_display_says_spawn(monkeypatch):
    def unavailable():
        raise egl.EglUnavailableError("Mesa's surfaceless EGL platform is not available")

    monkeypatch.setattr(egl, "inherited_display", lambda index: True)
    monkeypatch.setattr(egl, "ForkSafeContext", unavailable)
    with pytest.raises(RuntimeError, match=r"no fork-safe context can be made \(Mesa's surfaceless.*'spawn'"):
        dr.RasterizeGLContext(device="cpu")
