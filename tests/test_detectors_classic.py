"""PyOD baselines, GANomaly and DEC behind the detector API, on real ADBench splits."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import small_split
from sklearn.datasets import load_digits

from rlad.algorithms.ganomaly import GANomalyDetector
from rlad.algorithms.registry import get_detector_class, load_detector, make_detector
from rlad.core.checkpoint import CheckpointError
from rlad.core.metrics import auc_scores

# detector -> ADBench dataset it is tested on (defaults, seed 0); measured test AUC-ROC in comments
CASES = {
    "iforest": "thyroid",  # 0.976
    "ecod": "cardio",  # 0.923
    "knn": "breastw",  # 0.982
    "devnet": "cardio",  # 0.964
    "ganomaly": "cardio",  # 0.787
    "dec": "cardio",  # 0.820
}


@pytest.fixture(scope="module")
def fitted():
    """Fit each detector once per module: ``fitted(name) -> (detector, split)``."""
    cache = {}

    def get(name: str):
        if name not in cache:
            split = small_split(CASES[name])
            cache[name] = (make_detector(name).fit(split.X_train, split.y_train_semi), split)
        return cache[name]

    return get


@pytest.mark.parametrize("name", CASES)
def test_beats_random_on_adbench(fitted, name):
    det, split = fitted(name)
    assert get_detector_class(name).kind == name
    assert auc_scores(split.y_test, det.decision_function(split.X_test))["auc_roc"] > 0.7


@pytest.mark.parametrize("name", CASES)
def test_save_load_predict_and_kind_check(fitted, name, tmp_path):
    det, split = fitted(name)
    path = det.save(tmp_path / f"{name}.ckpt")
    loaded = load_detector(path)
    assert type(loaded) is type(det)
    np.testing.assert_array_equal(loaded.decision_function(split.X_test), det.decision_function(split.X_test))
    assert loaded.threshold_ == det.threshold_

    pred = loaded.predict(split.X_test)
    assert pred.shape == (len(split.X_test),) and set(np.unique(pred)) <= {0, 1}
    assert 0.05 < det.predict(split.X_train).mean() <= 0.11  # contamination 0.1 of training rows

    other = "knn" if name != "knn" else "ecod"
    with pytest.raises(CheckpointError, match="expected"):
        get_detector_class(other).load(path)


def test_devnet_scores_a_last_batch_of_one_row(fitted):
    """PyOD's DevNet crashed on 1 row, or 513 with its batch of 512 (the DPLAN peers benchmark hit it)."""
    det, split = fitted("devnet")
    X = np.tile(split.X_test, (600 // len(split.X_test) + 1, 1))[:513]
    scores = det.decision_function(X)
    assert scores.shape == (513,) and np.allclose(scores[:512], det.decision_function(X[:512]))
    assert det.decision_function(X[:1]) == pytest.approx(scores[:1])


def test_devnet_needs_labelled_anomalies():
    split = small_split("breastw")
    with pytest.raises(ValueError, match="semi-supervised"):
        make_detector("devnet").fit(split.X_train)


def test_ganomaly_conv_nets_on_digit_images():
    """Rows are flattened 8x8 images: class 0 normal, the other digits anomalous."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    normal = rng.permutation(np.flatnonzero(y == 0))
    anomalies = rng.choice(np.flatnonzero(y != 0), 60, replace=False)
    det = GANomalyDetector(image_shape=(1, 8, 8), epochs=80, batch_size=32).fit(X[normal[:120]])
    X_test, y_test = X[np.r_[normal[120:], anomalies]], np.r_[np.zeros(len(normal) - 120), np.ones(60)]
    assert auc_scores(y_test, det.decision_function(X_test))["auc_roc"] > 0.85
    with pytest.raises(ValueError, match="image_shape"):
        GANomalyDetector(image_shape=(1, 7, 7)).fit(X[:50])
