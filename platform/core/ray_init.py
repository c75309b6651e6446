"""Starting Ray the one way rlad does it: always with an explicit CPU count."""
from __future__ import annotations

import logging
import os
from typing import Any

import ray

from rlad.core.verbosity import is_quiet


def init_ray(num_cpus: int | None = None, address: str | None = None, **kwargs: Any) -> None:
    """Connect to ``address`` (a running cluster, e.g. ``"auto"``) or start a local Ray with
    ``num_cpus`` CPUs (default: all cores). No-op when Ray is already initialised. In quiet mode
    (:mod:`rlad.core.verbosity`) worker logs stay on the workers and Ray logs errors only."""
    if ray.is_initialized():
        return
    if is_quiet():
        kwargs = {"log_to_driver": False, "logging_level": logging.ERROR, **kwargs}
    if address is not None:
        ray.init(address=address, **kwargs)
        return
    # address="local": always a new local instance, never a cluster that happens to be running.
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
