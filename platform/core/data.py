"""Tabular datasets: ADBench ``.npz``, Parquet and CSV into one type, and ADBench's protocol split.

Parquet/CSV files hold feature columns plus one label column named ``y`` (or ``label``), with
0 = normal and 1 = anomaly. Every defect in a file raises :class:`DatasetError` naming the file.
"""
from __future__ import annotations


import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from rlad.core.errors import UserError

LABEL_COLUMNS = ("y", "label")
SUFFIXES = (".npz", ".parquet", ".pq", ".csv")
#: The repository checkout (this file is ``<checkout>/platform/core/data.py``).
CHECKOUT = Path(__file__).resolve().parents[2]
#: Where the shared data sets sit when ``$RLAD_ADBENCH_DIR`` is unset: ``shared/datasets``
#: beside the checkout, not inside it (no data set is copied into the repository).
SHARED_DATASETS = CHECKOUT.parent / "shared" / "datasets"


class DatasetError(UserError, ValueError):
    """A dataset file is missing, unreadable or not a valid anomaly-detection table."""


@dataclass(frozen=True)
class TabularDataset:
    """Rows ``X`` (float32) with labels ``y`` (0 normal, 1 anomaly)."""

    X: np.ndarray
    y: np.ndarray
    name: str

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


@dataclass(frozen=True)
class SplitConfig:
    """ADBench protocol: stratified 70/30 split, MinMax scaling fitted on train, datasets over
    ``max_rows`` subsampled (stratified), a fraction ``la`` of training anomalies labelled.

    ``n_labeled_anomalies`` replaces ``la`` by a count (DPLAN uses 60); ``contamination``, when
    set, drops unlabelled training anomalies until they make that fraction of unlabelled rows
    (DPLAN uses 0.02)."""

    test_size: float = 0.3
    max_rows: int = 10_000
    la: float = 0.1
    n_labeled_anomalies: int | None = None
    contamination: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Split:
    """``y_train_semi`` is what a detector may see: 1 for labelled anomalies, 0 otherwise.
    ``y_train`` holds the true labels (for analysis only)."""

    X_train: np.ndarray
    y_train: np.ndarray
    y_train_semi: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _read_npz(path: Path, target: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` and ``target`` (the labels, or a class column)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"X", target} - set(f.files)
            if missing:
                raise DatasetError(f"{path}: missing array(s) {sorted(missing)}; found {f.files}")
            return f["X"], f[target]
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from exc


def check_unique_columns(path: Path, names: list[str]) -> None:
    """A table's column names must be unique (pyarrow keeps repeats; a lookup by name would fail)."""
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DatasetError(f"{path}: column name(s) {repeated} appear more than once")


def validate(X: np.ndarray, y: np.ndarray, source: str) -> TabularDataset:
    """Check shapes, dtypes, finiteness and binary labels with both classes present."""
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"{source}: X must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise DatasetError(f"{source}: X must be 2-D (rows x features), got shape {X.shape}")
    y = np.asarray(y).ravel()
    if y.shape[0] != X.shape[0]:
        raise DatasetError(f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DatasetError(f"{source}: empty dataset, shape {X.shape}")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        rows = np.where(~np.isfinite(X).all(axis=1))[0]
        raise DatasetError(f"{source}: X has NaN/inf values in {rows.size} row(s), first at row {rows[0]}")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise DatasetError(f"{source}: y must hold only 0 (normal) and 1 (anomaly), got values {np.unique(y)[:10]}")
    y = y.astype(np.int64)
    if np.unique(y).size < 2:
        raise DatasetError(f"{source}: y has only class {int(y[0])}; need both normal (0) and anomaly (1) rows")
    return TabularDataset(X=X, y=y, name=Path(source).stem)


def load_dataset(path: str | os.PathLike, label_column: str | None = None, id_column: str | None = None) -> TabularDataset:
    """Load an ADBench ``.npz`` (arrays ``X``, ``y``), or a Parquet or CSV table with a label
    column (``y``/``label`` unless named; an ``id_column`` is left out of the features)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix == ".npz":
        X, y = _read_npz(path)
    elif path.suffix in SUFFIXES:  # the one table reader (rlad fit's), columns typed and encoded
        from rlad.core.tables import load_table_dataset

        return load_table_dataset(path, label_column=label_column, id_column=id_column)
    else:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")
    return validate(np.asarray(X), np.asarray(y), str(path))


@dataclass(frozen=True)
class ClassDataset:
    """Rows ``X`` (float32) with a class per row (integers): one domain of a task family, where a
    task takes one class as normal and the others as anomalous."""

    X: np.ndarray
    classes: np.ndarray
    name: str


def _class_table(path: Path, class_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Numeric feature columns and the class column of a table, read by the one table reader."""
    import pandas as pd

    from rlad.core.tables import read_training_table, table_columns

    if class_column not in table_columns(path):
        raise DatasetError(f"{path}: no class column {class_column!r}")
    table = read_training_table(path, id_column=class_column)  # the class column is kept out of the features
    if table.bad:
        raise DatasetError(f"{path}: row {table.bad[0].row}: {table.bad[0].reason}")
    frame = table.frame
    bad = [c for c in frame.columns if pd.to_numeric(frame[c], errors="coerce").isna().any()]
    if bad:
        raise DatasetError(f"{path}: non-numeric feature column(s) {bad}")
    if frame.shape[1] == 0:
        raise DatasetError(f"{path}: no feature columns")
    X = frame.apply(pd.to_numeric).to_numpy(dtype=np.float64)
    classes = pd.to_numeric(pd.Series(table.ids), errors="coerce")
    if classes.isna().any():
        raise DatasetError(f"{path}: class column {class_column!r} must hold integers")
    return X, classes.to_numpy()


def load_class_dataset(path: str | os.PathLike, class_column: str) -> ClassDataset:
    """A domain file with a class column: an ``.npz`` holding ``X`` and an array named
    ``class_column``, or a Parquet/CSV table whose other numeric columns are the features."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix == ".npz":
        X, classes = _read_npz(path, class_column)
    elif path.suffix in SUFFIXES:
        X, classes = _class_table(path, class_column)
    else:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")
    X, classes = np.asarray(X), np.asarray(classes).ravel()
    if X.ndim != 2 or X.dtype.kind not in "biuf" or classes.shape[0] != X.shape[0]:
        raise DatasetError(f"{path}: need numeric 2-D X and one class per row, got X {X.shape} and {classes.shape[0]} classes")
    if classes.dtype.kind not in "biu":
        raise DatasetError(f"{path}: class column {class_column!r} must hold integers, got dtype {classes.dtype}")
    if not np.isfinite(X).all():
        raise DatasetError(f"{path}: X has NaN/inf values")
    if np.unique(classes).size < 2:
        raise DatasetError(f"{path}: need at least 2 classes in {class_column!r}")
    return ClassDataset(X.astype(np.float32), classes.astype(np.int64), path.stem)


def adbench_split(ds: TabularDataset, cfg: SplitConfig = SplitConfig()) -> Split:
    """Apply the ADBench protocol (see :class:`SplitConfig`)."""
    rng = np.random.default_rng(cfg.seed)
    X, y = ds.X, ds.y
    if X.shape[0] > cfg.max_rows:
        X, _, y, _ = train_test_split(X, y, train_size=cfg.max_rows, stratify=y, random_state=cfg.seed)
    if min(np.bincount(y, minlength=2)) < 2:
        raise DatasetError(f"{ds.name}: need at least 2 rows of each class to split, got {np.bincount(y)}")
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=cfg.test_size, stratify=y, random_state=cfg.seed)
    scaler = MinMaxScaler().fit(X_tr)
    X_tr = scaler.transform(X_tr).astype(np.float32)
    X_te = np.clip(scaler.transform(X_te), -1.0, 2.0).astype(np.float32)

    anomalies = np.flatnonzero(y_tr == 1)
    n_lab = cfg.n_labeled_anomalies if cfg.n_labeled_anomalies is not None else int(round(cfg.la * anomalies.size))
    labelled = rng.choice(anomalies, size=min(n_lab, anomalies.size), replace=False)
    y_semi = np.zeros_like(y_tr)
    y_semi[labelled] = 1

    split = Split(X_train=X_tr, y_train=y_tr, y_train_semi=y_semi, X_test=X_te, y_test=y_te, name=ds.name)
    return split if cfg.contamination is None else contaminate(split, cfg.contamination, rng)


def contaminate(split: Split, contamination: float, rng: np.random.Generator) -> Split:
    """Drop unlabelled training anomalies until they make ``contamination`` of the unlabelled rows
    (DPLAN's protocol); labelled anomalies and test rows stay."""
    unl = split.y_train_semi == 0
    n_normal = int(((split.y_train == 0) & unl).sum())
    keep_anom = int(contamination * n_normal / (1.0 - contamination))
    unl_anom = np.flatnonzero((split.y_train == 1) & unl)
    keep = np.setdiff1d(np.arange(split.y_train.size), rng.permutation(unl_anom)[keep_anom:])
    return replace(split, X_train=split.X_train[keep], y_train=split.y_train[keep],
                               y_train_semi=split.y_train_semi[keep])


#: the fewest test anomalies of the held-out type :func:`unseen_type_split` keeps a split with
UNSEEN_MIN_TEST = 5
#: what an unseen-types split needs, in words (``rlad bench`` says it where one is missing)
UNSEEN_NEEDS = f"labelled anomalies of one k-means type and {UNSEEN_MIN_TEST} test anomalies of the other"


def unseen_type_split(split: Split, seed: int = 0, min_test: int = UNSEEN_MIN_TEST) -> Split | None:
    """ADBench's split with an anomaly type held out: the training anomalies fall into two k-means
    clusters (test anomalies go to the nearer centre); the labelled anomalies, as many as in
    ``split``, are drawn from the larger cluster only, and the test set keeps the normal rows and
    the other cluster's anomalies. It tests what labelled anomalies teach about anomalies unlike
    them (Swift Hydra's aim). The other type stays in the training rows, unlabelled. None when a
    cluster is too small: fewer training anomalies than labels, or fewer than ``min_test`` test
    anomalies of the held-out type (with fewer, one test anomaly carries over a fifth of the AUC-PR)."""
    from sklearn.cluster import KMeans

    train_anom, test_anom = np.flatnonzero(split.y_train == 1), np.flatnonzero(split.y_test == 1)
    n_lab = int(split.y_train_semi.sum())
    if train_anom.size < 2 or n_lab == 0:
        return None
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(split.X_train[train_anom])
    train_type, test_type = km.labels_, km.predict(split.X_test[test_anom])
    seen = int(np.bincount(train_type, minlength=2).argmax())
    pool, held_out = train_anom[train_type == seen], test_anom[test_type != seen]
    if pool.size < n_lab or held_out.size < min_test:
        return None
    y_semi = np.zeros_like(split.y_train_semi)
    y_semi[np.random.default_rng(seed).choice(pool, size=n_lab, replace=False)] = 1
    test_keep = split.y_test == 0
    test_keep[held_out] = True
    return Split(X_train=split.X_train, y_train=split.y_train, y_train_semi=y_semi,
                 X_test=split.X_test[test_keep], y_test=split.y_test[test_keep], name=split.name)


def known_label_split(y: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Training and validation row indices from what a user knows: ``share`` of the labelled
    anomalies (``y == 1``) and of the unlabelled rows held out, each drawn with ``seed``. None when
    the held-out share would lack a labelled anomaly or an unlabelled row."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    held = [rng.permutation(np.flatnonzero(y == c))[: int(round(share * (y == c).sum()))] for c in (1, 0)]
    if share <= 0 or min(len(h) for h in held) < 1:
        return None
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), val), val


def write_parquet(path: str | os.PathLike, X: np.ndarray, y: np.ndarray) -> Path:
    """Write rows and labels as Parquet (feature columns ``f0..``, label column ``y``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {f"f{i}": X[:, i].astype(np.float32) for i in range(X.shape[1])}
    cols["y"] = np.asarray(y).astype(np.int64)
    pq.write_table(pa.table(cols), path)
    return path


def adbench_dir() -> Path:
    """Folder of ADBench ``.npz`` files: ``$RLAD_ADBENCH_DIR``, else ``../shared/datasets/adbench``
    beside the repository checkout."""
    env = os.environ.get("RLAD_ADBENCH_DIR")
    if env:
        return Path(env)
    return SHARED_DATASETS / "adbench"


def adbench_file(name: str) -> Path:
    """Path of an ADBench file by name with or without number, e.g. ``"cardio"`` or ``"6_cardio"``."""
    folder = adbench_dir()
    matches = [p for p in sorted(folder.glob("*.npz")) if p.stem == name or p.stem.split("_", 1)[-1] == name]
    if not matches:
        raise DatasetError(f"no ADBench file named {name!r} in {folder}")
    return matches[0]


def resolve_data(data: str | os.PathLike) -> Path:
    """What every ``--data`` means: an existing file, else an ADBench data set by name
    (``thyroid`` or ``38_thyroid``) in :func:`adbench_dir`."""
    path = Path(data)
    if path.exists():
        return path
    if path.suffix in SUFFIXES or len(path.parts) > 1:
        raise DatasetError(f"{path}: no such file")
    return adbench_file(str(data))
