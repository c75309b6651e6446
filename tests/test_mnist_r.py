"""The paper's protocol on a domain family (Mnist-r): domain split, task construction, domain
files with a class column, the per-task comparator, the robust AE peer and ``rlad meta-rae
--domains``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from rlad.algorithms.meta_robust_ae import (
    TARGET_RATIOS, MetaRobustAEDetector, domain_pools, split_domains, target_aucs, target_tasks,
)
from rlad.algorithms.registry import load_detector, make_detector
from rlad.algorithms.robust_ae import group_shrink
from rlad.core.data import DatasetError, load_class_dataset
from rlad.core.metrics import auc_scores
from rlad.platform.cli.main import main


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Four 'rotation' domains of the same 8x8 digits 0-3 (rows of one class differ by domain
    only in orientation), as .npz files with a ``digit`` array."""
    X, y = load_digits(return_X_y=True)
    keep = y < 4
    images, digits = (X[keep] / 16.0).reshape(-1, 8, 8), y[keep]
    folder = tmp_path_factory.mktemp("family")
    for k in range(4):
        np.savez(folder / f"rot_{90 * k}.npz", X=np.rot90(images, k, axes=(1, 2)).reshape(len(images), -1).astype(np.float32), digit=digits)
    return sorted(folder.glob("*.npz"))


def test_split_domains_is_four_one_one_and_keeps_the_target_out():
    names = [f"d{i}" for i in range(6)]
    splits = [split_domains(names, "d2", seed) for seed in range(6)]
    for s in splits:
        assert (len(s.source), len(s.validation), s.target) == (4, 1, "d2")
        assert sorted([*s.source, *s.validation, s.target]) == names
    assert len({s.validation for s in splits}) > 1  # the seed draws the validation domain
    with pytest.raises(ValueError, match="target"):
        split_domains(names, "d9", 0)


def test_target_tasks_count_disjointness_and_ratios():
    classes = np.repeat(np.arange(10), 100)
    X = np.arange(1000, dtype=np.float32)[:, None]  # the row id as the only feature
    tasks = target_tasks(X, classes, np.random.default_rng(0))
    assert [t.normal_class for t in tasks] == list(range(10))
    assert sorted(t.ratio for t in tasks) == sorted(TARGET_RATIOS * 2)  # each ratio twice
    for t in tasks:
        assert np.intersect1d(t.support_rows, t.test_rows).size == 0
        assert np.union1d(t.support_rows, t.test_rows).size == 1000  # every other row is a test row
        np.testing.assert_array_equal(t.support[:, 0], t.support_rows)
        np.testing.assert_array_equal(t.test_y, classes[t.test_rows] != t.normal_class)
        support_classes = classes[t.support_rows]
        assert (support_classes == t.normal_class).sum() == 50
        assert abs((support_classes != t.normal_class).mean() - t.ratio) < 0.01
        assert (t.test_y == 0).sum() == 50
    assert len([p for d in "abcd" for p in domain_pools(d, X, classes)]) == 40  # 40 source tasks


def test_load_class_dataset_npz_and_csv(family, tmp_path):
    ds = load_class_dataset(family[0], "digit")
    assert ds.X.shape == (len(ds.classes), 64) and set(np.unique(ds.classes)) == {0, 1, 2, 3}
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,digit\n0.1,0.2,3\n0.3,0.4,5\n")
    table = load_class_dataset(csv, "digit")
    np.testing.assert_array_equal(table.classes, [3, 5])
    assert table.X.shape == (2, 2)
    with pytest.raises(DatasetError, match="label"):
        load_class_dataset(family[0], "label")
    with pytest.raises(DatasetError, match="class column"):
        load_class_dataset(csv, "label")


def test_per_task_robust_is_the_model_without_meta_training():
    classes = load_digits().target
    X = (load_digits().data / 16.0).astype(np.float32)
    task = target_tasks(X, classes, np.random.default_rng(0), ratios=(0.3,))[0]
    det = MetaRobustAEDetector(per_task="robust", per_task_steps=100).fit(task.support)
    untrained = MetaRobustAEDetector(per_task="robust", per_task_steps=0).fit(task.support)
    S = torch.as_tensor(task.support).unsqueeze(0)
    with torch.no_grad():
        assert det.net.robust_objective(S).item() < 0.8 * untrained.net.robust_objective(S).item()
    assert det.net.threshold.item() == pytest.approx(det.config.init_threshold, rel=1e-5)  # mu stays fixed
    assert auc_scores(task.test_y, det.decision_function(task.test))["auc_roc"] > 0.8


def test_group_shrink_and_robust_ae_absorbs_outlier_rows(tmp_path):
    R = np.array([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(group_shrink(R, 1.0), [[2.4, 3.2], [0.0, 0.0]])
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 20))
    X = (rng.normal(size=(200, 2)) @ basis).astype(np.float32)
    X[:10] += rng.normal(0, 3, size=(10, 20)).astype(np.float32)  # ten outlier rows off the plane
    det = make_detector("rae", rounds=5, epochs_per_round=20)
    det.fit(X)
    outlier_rows = np.flatnonzero(np.linalg.norm(det.outliers_, axis=1) > 0)
    assert np.isin(np.arange(10), outlier_rows).all() and outlier_rows.size < 40
    loaded = load_detector(det.save(tmp_path / "rae.ckpt"))
    np.testing.assert_allclose(loaded.decision_function(X), det.decision_function(X), rtol=1e-6)


def test_cli_meta_rae_on_a_domain_family(family, capsys):
    files = [str(f) for f in family]
    assert main(["meta-rae", "--domains", *files, "--class-column", "digit", "--target", "rot_0",
                 "--sizes", "reduced", "--max-steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "meta-training on 8 tasks" in out and "validating on 4" in out and "target rot_0" in out
    assert out.count("AUC-ROC") == 5 and "mean AUC-ROC over 4 target tasks" in out
    assert main(["meta-rae", "--domains", *files, "--target", "rot_45"]) == 2
    assert "none of the domains" in capsys.readouterr().err
    assert main(["meta-rae", "--domains", *files, "--class-column", "label", "--target", "rot_0"]) == 2
    assert "missing array" in capsys.readouterr().err


def test_target_aucs_scores_each_task():
    classes = np.repeat(np.arange(3), 20)
    X = np.c_[classes, np.zeros_like(classes)].astype(np.float32)
    tasks = target_tasks(X, classes, np.random.default_rng(0), ratios=(0.2,))
    # the distance from the support's majority class separates perfectly
    aucs = target_aucs(lambda s, t: np.abs(t[:, 0] - np.median(s[:, 0])), tasks)
    assert aucs == [1.0, 1.0, 1.0]
