"""What RLlib env runners build their envs from, held by a small named actor instead of copied
into ``env_config``.

RLlib builds an env runner's env from the ``env_config`` it was created with, also when it
restarts a crashed runner. Data that changes during training (Swift Hydra's detector, generator
and combined data set, round by round) would reach a restarted runner as it was at the start. An
:class:`EnvPayload` holds the data instead: ``env_config`` carries its name, an env runner built
at start or after a restart calls :func:`fetch_payload` and gets the current value, and the owner
replaces it with :meth:`EnvPayload.put`. Large arrays come back as zero-copy views of the object
store, one copy per node.
"""
from __future__ import annotations

import uuid
from typing import Any

import ray


@ray.remote(num_cpus=0)
class _PayloadActor:
    def __init__(self) -> None:
        self.value: Any = None

    def put(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


class EnvPayload:
    """A value env runners fetch by :attr:`name`; alive until :meth:`close` (or the driver ends)."""

    def __init__(self, value: Any, prefix: str = "rlad-env-payload") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self._actor = _PayloadActor.options(name=self.name).remote()
        self.put(value)

    def put(self, value: Any) -> None:
        """Replace the value; returns once env runners built from now on would read it."""
        ray.get(self._actor.put.remote(value))

    def close(self) -> None:
        ray.kill(self._actor)


def fetch_payload(name: str) -> Any:
    """The current value of the :class:`EnvPayload` called ``name`` (from any worker of the job)."""
    return ray.get(ray.get_actor(name).get.remote())
