"""Shared fixtures: one local Ray cluster shared by the modules that ask for it, real ADBench data,
small splits."""
from __future__ import annotations

import pytest
import ray
import torch

from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.ray_init import init_ray

torch.set_num_threads(1)


RAY_CPUS = 2


def ray_modules(items) -> set:
    """The test modules with a test that asks for ``ray_cluster``."""
    return {item.module for item in items if "ray_cluster" in item.fixturenames}


def pytest_collection_modifyitems(session, config, items) -> None:
    """Modules that share the Ray cluster run one after another (a start and a stop cost ~10 s on
    2 cores), after the others; file order otherwise."""
    shared = ray_modules(items)
    items.sort(key=lambda item: item.module in shared)  # stable


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, kept for the next module that asks for it unless this
    module left CPUs reserved (an actor still alive): then the next one starts afresh."""
    init_ray(num_cpus=RAY_CPUS)
    yield
    if ray.is_initialized() and ray.available_resources().get("CPU", 0) < RAY_CPUS:
        ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _ray_only_where_asked(request):
    """A module that does not ask for the shared cluster runs without it (it may start its own)."""
    if request.module not in ray_modules(request.session.items):
        ray.shutdown()
    yield


def pytest_sessionfinish(session, exitstatus) -> None:
    ray.shutdown()


def small_split(name: str, max_rows: int = 2000, la: float = 0.3, seed: int = 0):
    """ADBench protocol split of a real dataset, subsampled to keep tests fast."""
    return adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=max_rows, la=la, seed=seed))
