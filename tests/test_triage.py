"""Triage page back end: the training profile saved in checkpoints, explanations, the page's data calls."""
import numpy as np
import pytest

from rlad.algorithms.registry import build_detector, load_detector
from rlad.core.profile import TrainingProfile, psi


def test_profile_z_quantile_psi():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)) * [1.0, 2.0, 0.5] + [0.0, 10.0, -1.0]
    prof = TrainingProfile.fit(X)
    z = prof.zscores([[0.0, 14.0, -1.0]])[0]
    assert abs(z[1] - 2.0) < 0.15 and abs(z[0]) < 0.1
    q = prof.quantile_of([[0.0, 10.0, 100.0]])[0]
    assert abs(q[0] - 0.5) < 0.05 and q[2] == 1.0
    top = prof.top_features(np.array([0.0, 10.0, 2.0]), k=2, names=["a", "b", "c"])
    assert top[0]["feature"] == "c" and top[0]["z"] > 5
    assert max(prof.psi(X[:500])) < 0.1
    assert prof.psi(X[:500] + [0.0, 0.0, 1.0])[2] > 1.0
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0


def test_profile_saved_in_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    det = build_detector("iforest", {}, seed=0).fit(X)
    assert det.profile_ is not None and det.profile_.n_rows == 300
    det.save(tmp_path / "m.pt")
    back = load_detector(tmp_path / "m.pt")
    assert back.profile_ == det.profile_
    np.testing.assert_allclose(back.profile_.mean, X.mean(axis=0), atol=1e-5)
