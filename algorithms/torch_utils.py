"""Helpers shared by the torch detectors: device choice, seeding, MLPs, mini-batches, scoring."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def seeded(seed: int) -> Iterator[np.random.Generator]:
    """Seed torch inside a fork of its global RNG (the caller's RNG state is left untouched) and
    yield a numpy generator with the same seed."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        yield np.random.default_rng(seed)


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ReLU, out_act: type[nn.Module] | None = None) -> nn.Sequential:
    """Fully connected net ``sizes[0] -> ... -> sizes[-1]``, ``act`` between layers, ``out_act`` last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act())
    return nn.Sequential(*layers)


def minibatches(n: int, batch_size: int, epochs: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Index tensors of shuffled mini-batches over ``n`` rows for ``epochs`` epochs (torch RNG).
    A last batch smaller than ``batch_size`` is dropped unless it is the only one."""
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        stop = max(n - batch_size + 1, 1)
        for i in range(0, stop, batch_size):
            yield perm[i : i + batch_size]


@torch.no_grad()
def apply_batched(fn: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray, device: torch.device, batch_size: int = 4096) -> np.ndarray:
    """``fn`` over the rows of ``X`` in batches, without gradients; result as float64 numpy."""
    out = [fn(torch.as_tensor(X[i : i + batch_size], device=device)).cpu() for i in range(0, len(X), batch_size)]
    return torch.cat(out).double().numpy()


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a module's ``state_dict`` as CPU tensors (what checkpoints store)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
