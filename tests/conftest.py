"""Shared fixtures: one Ray cluster per test module, real ADBench data, small splits."""
from __future__ import annotations

import pytest
import ray
import torch

from rlad.platform.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.platform.core.ray_init import init_ray

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, shared by every test of one module."""
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def small_split(name: str, max_rows: int = 2000, la: float = 0.3, seed: int = 0):
    """ADBench protocol split of a real dataset, subsampled to keep tests fast."""
    return adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=max_rows, la=la, seed=seed))
