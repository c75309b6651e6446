"""Checkpoints are written atomically; corrupt or mismatched ones give a clear CheckpointError."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.registry import load_detector
from rlad.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(0)
    X = rng.random((200, 5)).astype(np.float32)
    y = (X[:, 0] > 0.9).astype(int)
    return MambaMoEDetector(epochs=1, n_experts=2).fit(X, y), X


def test_round_trip_through_registry(detector, tmp_path):
    det, X = detector
    loaded = load_detector(det.save(tmp_path / "d.pt"))
    assert isinstance(loaded, MambaMoEDetector)
    np.testing.assert_array_equal(loaded.decision_function(X), det.decision_function(X))


def test_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_files(detector, tmp_path, monkeypatch):
    det, X = detector
    path = det.save(tmp_path / "d.pt")
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        det.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]
    MambaMoEDetector.load(path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_files_are_refused(detector, tmp_path, damage):
    det, _ = detector
    path = det.save(tmp_path / "d.pt")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(os.urandom(4096))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt|checksum|format"):
        MambaMoEDetector.load(path)


def test_mismatched_checkpoints_are_refused(detector, tmp_path):
    det, _ = detector
    with pytest.raises(CheckpointError, match="does not exist"):
        MambaMoEDetector.load(tmp_path / "missing.pt")
    other = save_checkpoint(tmp_path / "other.pt", "iforest", {"model": {}, "meta": {}}, {})
    with pytest.raises(CheckpointError, match="holds a 'iforest' detector, expected 'mamba_moe'"):
        MambaMoEDetector.load(other)
    kind, config, state = load_checkpoint(det.save(tmp_path / "d.pt"))
    state["net"]["head.1.weight"] = torch.zeros(3, 3)  # weights of another architecture
    save_checkpoint(tmp_path / "bad_shape.pt", kind, config, state)
    with pytest.raises(CheckpointError, match="does not match MambaMoEDetector"):
        MambaMoEDetector.load(tmp_path / "bad_shape.pt")
    config["model"]["no_such_option"] = 1
    save_checkpoint(tmp_path / "bad_config.pt", kind, config, state)
    with pytest.raises(CheckpointError, match="does not match"):
        MambaMoEDetector.load(tmp_path / "bad_config.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain_torch.pt")
    with pytest.raises(CheckpointError, match="not in format"):
        MambaMoEDetector.load(tmp_path / "plain_torch.pt")


def test_checkpoints_leave_the_runtime_section_out_and_older_ones_still_load(tmp_path):
    """Resources are where a run happened, not what it learnt; checkpoints saved while DPLAN's
    runtime options sat at the top level load into its runtime section, unknown keys still fail."""
    from rlad.algorithms.dplan import DPLANDetector, DPLANRuntime, QNetwork
    from rlad.algorithms.swift_hydra import SwiftHydraConfig
    from rlad.core.config import from_dict, learned_options

    X = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    det = DPLANDetector(runtime={"num_env_runners": 3, "num_cpus": 7}).adopt(X, {"q_network": QNetwork(4).state_dict()},
                                                                          (np.arange(50) < 3).astype(np.int64))
    kind, config, state = load_checkpoint(det.save(tmp_path / "d.pt"))
    assert "runtime" not in config["model"] and "rollout" not in learned_options(SwiftHydraConfig())
    assert DPLANDetector.load(tmp_path / "d.pt").config.runtime == DPLANRuntime()
    config["model"].update(num_env_runners=3, num_cpus=7)  # as saved before the runtime section
    save_checkpoint(tmp_path / "old.pt", kind, config, state)
    old = DPLANDetector.load(tmp_path / "old.pt")
    assert (old.config.runtime.num_env_runners, old.config.runtime.num_cpus) == (3, 7)
    np.testing.assert_array_equal(old.decision_function(X), det.decision_function(X))
    config["model"]["num_runners"] = 1
    save_checkpoint(tmp_path / "bad.pt", kind, config, state)
    with pytest.raises(CheckpointError, match="unknown option"):
        DPLANDetector.load(tmp_path / "bad.pt")
    assert from_dict(SwiftHydraConfig, {"env": {"w_div": 0.5}}).env.w_div_start == 0.5  # renamed: the old name loads
