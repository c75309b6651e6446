"""The peers a user would pick instead (optional installs: CatBoost by the ``[peers]`` extra, DeepOD by hand)
behind the detector API."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from conftest import small_split
from rlad.algorithms.registry import load_detector, make_detector
from rlad.core.metrics import auc_scores


@pytest.mark.parametrize("kind, module, options", [
    ("catboost", "catboost", {"iterations": 100}),
    ("deepsad", "deepod", {"epochs": 3}),
    ("prenet", "deepod", {"epochs": 3}),
    ("rosas", "deepod", {"epochs": 3}),
])
def test_peer_learns_saves_and_loads(kind, module, options, tmp_path):
    pytest.importorskip(module)
    split = small_split("thyroid", max_rows=1500, la=0.3)
    det = make_detector(kind, **options).fit(split.X_train, split.y_train_semi)
    scores = det.decision_function(split.X_test)
    assert auc_scores(split.y_test, scores)["auc_roc"] > 0.7
    loaded = load_detector(det.save(tmp_path / f"{kind}.pt"))
    np.testing.assert_allclose(loaded.decision_function(split.X_test), scores, rtol=1e-5)
    with pytest.raises(ValueError, match=r"labelled anomaly\(ies\)"):
        make_detector(kind, **options).fit(split.X_train, np.zeros(len(split.X_train), int))


@pytest.mark.parametrize("kind, module, command", [
    ("catboost", "catboost", 'pip install -e ".[peers]"'),
    ("deepsad", "deepod", "pip install --no-deps deepod==0.4.1"),  # the extra cannot carry DeepOD (torch pin)
])
def test_missing_peer_names_its_install_command(kind, module, command, monkeypatch):
    for name in [module] + [m for m in sys.modules if m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails as if not installed
    split = small_split("thyroid", max_rows=300, la=0.3)
    with pytest.raises(ImportError, match=re.escape(f"is not installed: {command}")):
        make_detector(kind).fit(split.X_train, split.y_train_semi)
