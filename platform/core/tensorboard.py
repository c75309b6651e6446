"""TensorBoard logging of nested result dicts (RLlib results, loop metrics)."""
from __future__ import annotations

import numbers
import os
from typing import Any, Mapping

from torch.utils.tensorboard import SummaryWriter


def flatten_numeric(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1.0}``, keeping only real numbers."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_numeric(value, name + "/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class TBLogger:
    """Writes scalars under ``logdir``; use as a context manager."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log(self, result: Mapping[str, Any], step: int, prefix: str = "") -> None:
        for name, value in flatten_numeric(result, prefix).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "TBLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
