"""Dataset loading (npz / Parquet / CSV), validation errors and the ADBench protocol split."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from rlad.core.data import (
    DatasetError, SplitConfig, TabularDataset, adbench_file, adbench_split, load_dataset, unseen_type_split,
    write_parquet,
)


@pytest.fixture(scope="module")
def cardio():
    return load_dataset(adbench_file("cardio"))


def test_npz_parquet_csv_load_identically(cardio, tmp_path):
    pq_path = write_parquet(tmp_path / "c.parquet", cardio.X, cardio.y)
    csv_path = tmp_path / "c.csv"
    cols = {f"f{i}": cardio.X[:, i] for i in range(cardio.n_features)} | {"label": cardio.y}
    pa_csv.write_csv(pa.table(cols), csv_path)
    for path in (pq_path, csv_path):
        ds = load_dataset(path)
        np.testing.assert_allclose(ds.X, cardio.X, rtol=1e-6)
        np.testing.assert_array_equal(ds.y, cardio.y)


def test_integer_npz_is_accepted(tmp_path):
    path = tmp_path / "ints.npz"
    np.savez(path, X=np.arange(20).reshape(10, 2), y=np.array([0] * 8 + [1] * 2))
    assert load_dataset(path).X.dtype == np.float32


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.ones((4, 2))}, "missing array"),
        ({"X": np.array([[1.0, np.nan], [0, 1], [1, 1], [2, 2]]), "y": np.array([0, 1, 0, 1])}, "NaN"),
        ({"X": np.ones((4, 2)), "y": np.zeros(4)}, "only class 0"),
        ({"X": np.ones((4, 2)), "y": np.array([0, 1, 2, 0])}, "only 0"),
        ({"X": np.ones((4, 2)), "y": np.array([0, 1, 0])}, "3 labels"),
        ({"X": np.array([["a", "b"]] * 4), "y": np.array([0, 1, 0, 1])}, "numeric"),
    ],
)
def test_bad_npz_files_give_clear_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_bad_tables_and_paths(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n1,x,0\n2,y,1\n")
    assert load_dataset(csv).X.shape == (2, 3)  # a string column is categorical: one-hot (issue 31)
    csv.write_text("a,b,y\n1,x,0\n2,y,7\n")
    with pytest.raises(DatasetError, match="row 3: label column 'y': 7 is not 0 or 1"):
        load_dataset(csv)
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="no label column"):
        load_dataset(csv)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable"):
        load_dataset(tmp_path / "junk.npz")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(DatasetError, match="unsupported"):
        load_dataset(tmp_path / "x.txt")


def test_adbench_split_protocol(cardio):
    s = adbench_split(cardio, SplitConfig(la=0.2, seed=3))
    n = len(cardio.y)
    assert len(s.y_train) + len(s.y_test) == n
    assert abs(len(s.y_test) / n - 0.3) < 0.01
    assert abs(s.y_test.mean() - cardio.y.mean()) < 0.01  # stratified
    assert s.X_train.min() >= 0.0 and s.X_train.max() <= 1.0  # MinMax fitted on train
    assert s.y_train_semi.sum() == round(0.2 * s.y_train.sum())
    assert np.all(s.y_train[s.y_train_semi == 1] == 1)  # only true anomalies are labelled


def test_split_subsamples_large_data_and_dplan_protocol():
    big = load_dataset(adbench_file("shuttle"))  # 49k rows
    s = adbench_split(big, SplitConfig(max_rows=5000, n_labeled_anomalies=60, contamination=0.02))
    assert len(s.y_train) <= 3500
    assert s.y_train_semi.sum() == 60
    unl = s.y_train_semi == 0
    assert abs(s.y_train[unl].mean() - 0.02) < 0.002


def test_unseen_type_split_labels_one_type_and_tests_the_other():
    rng = np.random.default_rng(0)
    normal = rng.normal(0.0, 1.0, (600, 4))
    seen, unseen = rng.normal(8.0, 0.5, (60, 4)), rng.normal(-8.0, 0.5, (30, 4))  # two anomaly types
    ds = TabularDataset(np.vstack([normal, seen, unseen]).astype(np.float32), np.r_[np.zeros(600), np.ones(90)].astype(int), "two_types")
    split = adbench_split(ds, SplitConfig(la=0.2, seed=1))
    held = unseen_type_split(split, seed=1)
    assert held.y_train_semi.sum() == split.y_train_semi.sum() > 0
    assert np.all(held.X_train[held.y_train_semi == 1].mean(1) > held.X_train.mean())  # labels: the larger type only
    test_anomalies = held.X_test[held.y_test == 1]
    unseen_in_test = ((split.y_test == 1) & (split.X_test.mean(1) < split.X_test.mean())).sum()
    assert len(test_anomalies) == unseen_in_test > 0 and np.all(test_anomalies.mean(1) < held.X_test.mean())  # the other type
    assert (held.y_test == 0).sum() == (split.y_test == 0).sum()
    np.testing.assert_array_equal(held.y_train, split.y_train)  # the held-out type stays in training, unlabelled
    assert unseen_type_split(split, seed=1, min_test=len(test_anomalies) + 1) is None
