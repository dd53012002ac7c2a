"""EGL devices: enumeration (against a stand-in libEGL and the real one) and the
matching of CUDA devices to EGL devices (on made-up device lists), which decides
the GL context a CUDA tensor's rasterization runs in."""

import logging
import subprocess
from pathlib import Path

import pytest
import torch

import glrast as dr
from glrast import cuda_driver, egl, kernels

STANDINS = Path(__file__).resolve().parent / "standins"

SOFTWARE = ("EGL_MESA_device_software",)
NVIDIA = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")


def nv(index, ordinal, pci=None):
    return egl.EglDevice(index, NVIDIA, ordinal, f"/dev/dri/card{index}", pci)


def mesa(index):
    return egl.EglDevice(index, SOFTWARE, None, None, None)


# ---------------------------------------------------------------------------
# Device matching


def test_single_gpu_after_mesa_device():
    devices = [mesa(0), nv(1, 0)]
    assert egl.select_device(devices, 0) == 1  # not "device 0 by accident"


def test_cuda_visible_devices_subset():
    # Four GPUs, CUDA_VISIBLE_DEVICES=2,3: EGL lists all four, only the visible two
    # have CUDA ordinals, numbered as this process sees them.
    devices = [nv(0, None), nv(1, None), nv(2, 0), nv(3, 1), mesa(4)]
    assert egl.select_device(devices, 0) == 2
    assert egl.select_device(devices, 1) == 3


def test_permuted_order():
    # CUDA_VISIBLE_DEVICES=1,0 (or CUDA_DEVICE_ORDER=FASTEST_FIRST): the orders differ.
    devices = [nv(0, 1, "0000:01:00.0"), nv(1, 0, "0000:02:00.0")]
    assert egl.select_device(devices, 0, "0000:02:00.0") == 1
    assert egl.select_device(devices, 1, "0000:01:00.0") == 0


def test_pci_spellings_match():
    devices = [nv(0, 0, "0000:3b:00.0")]
    assert egl.select_device(devices, 0, "00000000:3B:00.0") == 0
    assert egl.normalize_pci("00000000:3B:00.0") == egl.normalize_pci("0000:3b:00.0") == (0, 0x3B, 0)
    assert egl.normalize_pci("garbage") is None and egl.normalize_pci(None) is None


def test_pci_wins_over_disagreeing_ordinal(caplog):
    devices = [nv(0, 0, "0000:01:00.0"), nv(1, 1, "0000:02:00.0")]
    with caplog.at_level(logging.WARNING, logger="glrast"):
        assert egl.select_device(devices, 0, "0000:02:00.0") == 1
    assert "matched by PCI address" in caplog.text


def test_ordinal_used_when_pci_unknown_on_egl_side():
    devices = [nv(0, 1), nv(1, 0)]  # containers often have no /dev/dri
    assert egl.select_device(devices, 0, "0000:02:00.0") == 1


def test_contradicting_pci_raises():
    devices = [nv(0, 0, "0000:01:00.0")]
    with pytest.raises(RuntimeError, match=r"reports CUDA ordinal 0 but sits at PCI 0000:01:00.0"):
        egl.select_device(devices, 0, "0000:09:00.0")


def test_no_nvidia_device_lists_what_was_found():
    with pytest.raises(RuntimeError) as info:
        egl.select_device([mesa(0)], 0)
    text = str(info.value)
    assert "no EGL device reports a CUDA ordinal" in text
    assert "EGL device 0: CUDA ordinal none, PCI unknown, software (Mesa llvmpipe)" in text
    assert "libEGL_nvidia.so.0" in text and "NVIDIA_DRIVER_CAPABILITIES" in text and "glrast doctor" in text


def test_missing_ordinal_raises():
    devices = [nv(0, 0), nv(1, 1)]
    with pytest.raises(RuntimeError, match=r"(?s)no EGL device reports CUDA ordinal 2.*EGL device 1: CUDA ordinal 1"):
        egl.select_device(devices, 2)
    with pytest.raises(RuntimeError, match="no EGL devices at all"):
        egl.select_device([], 0)


def test_ambiguous_match_raises():
    with pytest.raises(RuntimeError, match=r"several EGL devices claim it \(\[0, 1\]\)"):
        egl.select_device([nv(0, 0), nv(1, 0)], 0)


def test_glcontext_env_override_must_agree():
    devices = [mesa(0), nv(1, 0)]
    assert egl.select_device(devices, 0, env_index="1") == 1
    assert egl.select_device(devices, 0, env_index="") == 1
    with pytest.raises(RuntimeError, match=r"GLCONTEXT_DEVICE_INDEX=0 would make glcontext open EGL device 0.*unset"):
        egl.select_device(devices, 0, env_index="0")


def test_egl_device_for_cuda_wiring(monkeypatch):
    monkeypatch.setattr(egl, "query_devices", lambda: [mesa(0), nv(1, 1, "0000:01:00.0"), nv(2, 0, "0000:02:00.0")])
    monkeypatch.setattr(cuda_driver, "pci_bus_id", lambda index: {0: "0000:02:00.0", 1: "0000:01:00.0"}[index])
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    assert egl.egl_device_for_cuda(0) == 2
    assert egl.egl_device_for_cuda(1) == 1
    monkeypatch.setenv(egl.DEVICE_INDEX_ENV, "0")
    with pytest.raises(RuntimeError, match="GLCONTEXT_DEVICE_INDEX"):
        egl.egl_device_for_cuda(0)


def test_context_opens_the_matched_egl_device(monkeypatch):
    # A CUDA context is opened on the EGL device its CUDA ordinal maps to (here the only
    # device, standing in for an NVIDIA one), and says which in `info`.
    monkeypatch.setattr(egl, "query_devices", lambda: [nv(0, 3)])
    monkeypatch.setattr(cuda_driver, "pci_bus_id", lambda index: None)
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device check passes; no tensor is made
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with dr.RasterizeGLContext(device="cuda:3") as ctx:
        assert ctx.egl_device == 0
        assert ctx.info["egl_device"] == 0 and ctx.info["device"] == "cuda:3"
    monkeypatch.setattr(egl, "query_devices", lambda: [mesa(0)])
    with pytest.raises(RuntimeError, match="no EGL device for CUDA device 3"):
        dr.RasterizeGLContext(device="cuda:3")
    with dr.RasterizeGLContext(device="cpu") as ctx:
        assert ctx.info["egl_device"] is None


def test_egl_unavailable_is_reported(monkeypatch):
    def broken():
        raise egl.EglUnavailableError("cannot load libEGL.so.1")

    monkeypatch.setattr(egl, "query_devices", broken)
    with pytest.raises(RuntimeError, match="cannot enumerate EGL devices to find CUDA device 0: cannot load libEGL"):
        egl.egl_device_for_cuda(0)


def test_pci_bus_id_from_sysfs(tmp_path):
    pci = tmp_path / "devices" / "pci0000:00" / "0000:00:01.0" / "0000:01:00.0"
    pci.mkdir(parents=True)
    (tmp_path / "drm" / "card1").mkdir(parents=True)
    (tmp_path / "drm" / "card1" / "device").symlink_to(pci)
    platform_dev = tmp_path / "devices" / "platform" / "simple-framebuffer.0"
    platform_dev.mkdir(parents=True)
    (tmp_path / "drm" / "card0").mkdir()
    (tmp_path / "drm" / "card0" / "device").symlink_to(platform_dev)
    assert egl.pci_bus_id_of_drm("/dev/dri/card1", tmp_path / "drm") == "0000:01:00.0"
    assert egl.pci_bus_id_of_drm("/dev/dri/card0", tmp_path / "drm") is None
    assert egl.pci_bus_id_of_drm(None, tmp_path / "drm") is None


def test_device_queries_against_a_stand_in_libegl(tmp_path, monkeypatch):
    """query_devices' ctypes calls (handles, strings, EGLAttrib out-values) against a fake libEGL
    with Mesa's software device and two NVIDIA devices, one hidden from CUDA."""
    lib = tmp_path / "libEGL-fake.so"
    build = subprocess.run(
        [kernels.host_compiler()[0], "-shared", "-fPIC", "-o", str(lib), str(STANDINS / "libegl.cpp")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    monkeypatch.setenv(egl.LIBEGL_ENV, str(lib))
    monkeypatch.delenv(egl.DEVICE_INDEX_ENV, raising=False)
    egl._egl.cache_clear()
    try:
        assert egl.client_extensions() == ["EGL_EXT_device_enumeration"]
        devices = egl.query_devices()
        monkeypatch.setattr(cuda_driver, "pci_bus_id", lambda index: None)
        chosen = egl.egl_device_for_cuda(0)
    finally:
        egl._egl.cache_clear()
    nvidia = ("EGL_NV_device_cuda", "EGL_EXT_device_drm")
    assert devices == [
        egl.EglDevice(0, ("EGL_MESA_device_software", "EGL_EXT_device_drm_render_node"), None, None, None),
        egl.EglDevice(1, nvidia, None, "/dev/dri/card-glrast-test1", None),
        egl.EglDevice(2, nvidia, 0, "/dev/dri/card-glrast-test2", None),
    ]
    assert chosen == 2


def test_real_device_list():
    devices = egl.query_devices()
    assert [d.index for d in devices] == list(range(len(devices)))
    assert devices, "the test machines have at least Mesa's software device"
    assert "EGL_EXT_device_enumeration" in egl.client_extensions()
