"""The kernel cache heals itself: corrupt artifacts (truncated, empty, random bytes,
another library) are rebuilt instead of crashing or failing every run; a cache
directory that cannot be written falls back to a private one with one warning; build
folders of processes that died are removed, those of live builds are left alone.
Everything on the tiny kernel tree (tests/tiny_kernel.py) with a private cache; cases
that could crash the interpreter (SIGBUS in the loader) run in a subprocess."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_kernel import RUN_TINY, TINY_HEADER, fill, leftovers

from glrast import kernels

SETPRIV = "/usr/bin/setpriv"


def run_tiny(csrc, cache, prefix=()):
    """RUN_TINY in a fresh interpreter: (returncode, cached path, values, stderr)."""
    env = {**os.environ, "GLRAST_CACHE_DIR": str(cache)}
    cmd = [*prefix, sys.executable, "-c", RUN_TINY, str(csrc)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = res.stdout.splitlines()
    return res.returncode, lines[0] if lines else None, lines[1] if len(lines) > 1 else None, res.stderr


def cached_files(cache):
    return sorted(p.name for p in (cache / "host").iterdir())


def test_truncated_artifact_is_rebuilt_not_loaded(tiny_tree):
    csrc, cache = tiny_tree
    built = kernels.build_host("tiny")
    data = built.read_bytes()
    built.write_bytes(data[: len(data) // 2])  # what a full disk or a killed copy leaves
    rc, path, values, err = run_tiny(csrc, cache)
    assert rc == 0, err  # before: SIGBUS inside ctypes.CDLL, in every later process
    assert values == str([7.0] * 5)
    assert path == str(built) and built.read_bytes() == data  # the same build again, in the same place
    assert "is corrupt (its bytes do not match its name); rebuilding" in err


@pytest.mark.parametrize("kind", ["empty", "random bytes", "another library"])
def test_corrupt_artifact_is_rebuilt(tiny_tree, kind, caplog):
    csrc, cache = tiny_tree
    built = kernels.build_host("tiny")
    good = built.read_bytes()
    if kind == "empty":
        built.write_bytes(b"")
    elif kind == "random bytes":
        built.write_bytes(os.urandom(len(good)))
    else:  # a valid shared library, but not this build: tiny with another value
        (csrc / "tiny.h").write_text(TINY_HEADER.replace("7.0f", "9.0f"))
        other = kernels.build_host("tiny")
        (csrc / "tiny.h").write_text(TINY_HEADER)
        built.write_bytes(other.read_bytes())
    with caplog.at_level(logging.WARNING, logger="glrast"):
        assert kernels.build_host("tiny") == built
    assert built.read_bytes() == good
    assert fill(kernels.HostModule("tiny")) == [7.0] * 5  # 9.0 would mean the wrong library was loaded
    assert any("is corrupt (its bytes do not match its name); rebuilding" in r.message for r in caplog.records)
    assert leftovers(cache) == []


def test_corrupt_nvrtc_artifact_is_rebuilt(tiny_tree):
    csrc, cache = tiny_tree
    (csrc / "tiny.cu").write_text('extern "C" __global__ void tiny_fill(float* out) { out[0] = 7.0f; }\n')
    image = kernels.build_nvrtc("tiny", 75)
    (cached,) = (cache / "nvrtc").iterdir()
    cached.write_bytes(image[: len(image) // 2])
    assert kernels.build_nvrtc("tiny", 75) == image
    assert cached.read_bytes() == image


def test_cache_dir_that_is_a_file_falls_back_to_a_private_one(tiny_tree, tmp_path, monkeypatch, caplog):
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("GLRAST_CACHE_DIR", str(not_a_dir))
    with caplog.at_level(logging.WARNING, logger="glrast"):
        first = kernels.build_host("tiny")
        assert kernels.build_host("tiny") == first  # found again in the private cache
        assert fill(kernels.HostModule("tiny")) == [7.0] * 5
    warnings = [r.message for r in caplog.records]
    assert len(warnings) == 1, warnings  # one line, once per process
    assert f"the kernel cache {not_a_dir} (GLRAST_CACHE_DIR) is not a writable directory" in warnings[0]
    assert str(first.parent.parent) in warnings[0] and not str(first).startswith(str(not_a_dir))


def without_root_override():
    """Command prefix under which even root obeys file permissions (no CAP_DAC_OVERRIDE)."""
    return (SETPRIV, "--bounding-set=-dac_override") if os.geteuid() == 0 else ()


def test_read_only_cache_dir(tiny_tree):
    csrc, cache = tiny_tree
    cache.mkdir()
    os.chmod(cache, 0o555)
    try:
        rc, path, values, err = run_tiny(csrc, cache, without_root_override())
    finally:
        os.chmod(cache, 0o755)
    assert rc == 0, err  # before: a raw PermissionError
    assert values == str([7.0] * 5)
    assert "(GLRAST_CACHE_DIR) is not a writable directory (Permission denied)" in err
    assert not path.startswith(str(cache)) and list(cache.iterdir()) == []


def test_read_only_cache_dir_with_the_build_in_it_is_used(tiny_tree):
    csrc, cache = tiny_tree
    built = kernels.build_host("tiny")
    for folder in (cache / "host", cache):
        os.chmod(folder, 0o555)
    try:
        rc, path, values, err = run_tiny(csrc, cache, without_root_override())
    finally:
        for folder in (cache, cache / "host"):
            os.chmod(folder, 0o755)
    assert rc == 0, err
    assert path == str(built) and values == str([7.0] * 5)
    assert err == ""  # nothing to build, nothing to warn about


def age(path, seconds):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_build_folder_of_a_killed_build_is_removed(tiny_tree, tmp_path):
    csrc, cache = tiny_tree
    slow = tmp_path / "slow-c++"  # answers --version, then hangs instead of compiling
    slow.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "slow c++ 1.0"; exit 0; }\nexec sleep 600\n')
    slow.chmod(0o755)
    env = {**os.environ, "GLRAST_CACHE_DIR": str(cache), "CXX": str(slow)}
    proc = subprocess.Popen([sys.executable, "-c", RUN_TINY, str(csrc)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not leftovers(cache) and time.time() < deadline:
            time.sleep(0.1)
        (orphan,) = leftovers(cache)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its compiler, as a kill -9 of the job would
        proc.wait()
    assert orphan.is_dir()  # what SIGKILL leaves behind
    age(orphan, kernels.STALE_BUILD_S + 1)
    kernels.build_host("tiny")  # the next build cleans up
    assert leftovers(cache) == []


LIVE_BUILD = """
import sys
from glrast import kernels
with kernels._build_folder("tiny") as (root, folder):
    print(folder, flush=True)
    sys.stdin.read()
"""


def test_build_folder_of_a_live_build_is_kept(tiny_tree):
    csrc, cache = tiny_tree
    env = {**os.environ, "GLRAST_CACHE_DIR": str(cache)}
    live = subprocess.Popen(
        [sys.executable, "-c", LIVE_BUILD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        folder = cache / os.path.basename(live.stdout.readline().strip())
        age(folder, 3600)  # old, but its process holds the lock: a slow build, not a dead one
        kernels.build_host("tiny")
        assert folder.is_dir()
    finally:
        live.communicate("", timeout=60)
    assert not folder.exists()  # removed by its own process


def test_verified_artifact_that_does_not_load_is_a_clear_error(tiny_tree):
    csrc, _ = tiny_tree
    source = 'extern int undefined_elsewhere;\nextern "C" int get() { return undefined_elsewhere; }\n'
    (csrc / "tiny.cu").write_text(source)
    with pytest.raises(kernels.KernelBuildError, match=r"cannot load the host build of csrc/tiny\.cu .*undefined_else"):
        kernels.HostModule("tiny")
