"""Atomic, self-describing checkpoints for detectors.

A checkpoint is one file written by ``torch.save`` holding ``{"format", "kind", "config", "state",
"sha256"}``. It is written to a temporary file in the same directory, fsynced and moved into place
with ``os.replace``, so a reader never sees half a file. Loading checks the format, the checksum
of the payload and the detector kind, and raises :class:`CheckpointError` with a clear message.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlad.core.errors import UserError

FORMAT = "rlad-checkpoint/1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another detector."""


def _payload_bytes(kind: str, config: dict[str, Any], state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"kind": kind, "config": config, "state": state}, buf)
    return buf.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, kind: str, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Save a detector's ``config`` (plain data) and ``state`` (tensors, arrays, numbers)."""
    payload = _payload_bytes(kind, config, state)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, expected_kind: str | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Return ``(kind, config, state)``; raise :class:`CheckpointError` on any defect."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage input
        raise CheckpointError(f"checkpoint {path} is corrupt or not an rlad checkpoint ({type(exc).__name__})") from exc
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not in format {FORMAT!r}")
    payload = outer["payload"]
    if hashlib.sha256(payload).hexdigest() != outer["sha256"]:
        raise CheckpointError(f"checkpoint {path} failed its checksum: the file is corrupt")
    inner = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    kind = inner["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"checkpoint {path} holds a {kind!r} detector, expected {expected_kind!r}")
    return kind, inner["config"], inner["state"]
