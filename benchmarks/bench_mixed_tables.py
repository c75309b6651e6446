"""Mixed tables (issue 31): do categories, dates and gaps cost a detector accuracy?

Each ADBench set is turned into a mixed table the way users' tables look: the 3 numeric columns
with the most distinct values are binned into 5 quantile categories (strings), a timestamp column
is added (uniform over a year, no signal), and 2% of all feature cells are blanked at random. The
mixed training table is written to CSV and fitted with ``rlad fit`` (the CLI, in-process; the
default detector), the test table is read by the same reader and scored by the saved model. Beside it, in the
same run: the same detector on the original numeric table, and CatBoost on the same mixed table
with its native categorical handling (categories as ``cat_features``, gaps as NaN, the timestamp
as seconds). ADBench split, la = 0.1, at most ``--max-rows`` rows.

    nice -n 10 python benchmarks/bench_mixed_tables.py --seeds 0 1 2 --arms all     # choose (dev seeds)
    nice -n 10 python benchmarks/bench_mixed_tables.py --seeds 3 4 5                # confirm
    python benchmarks/bench_mixed_tables.py --summarize benchmarks/results/mixed_tables_runs.csv
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("6_cardio", "38_thyroid", "2_annthyroid", "23_mammography", "31_satimage-2", "28_pendigits")
DETECTOR = "mamba_moe"  # the detector of the README's quick start
ARMS = {  # mixed-table arms: extra rlad fit flags (the diagnostic arms build only part of the mixed table)
    "mixed (defaults)": [],
    "mixed, dates cyclical": ["--dates", "cyclical"],
    "mixed, dates cyclical, no missing indicators": ["--dates", "cyclical", "--no-missing-indicators"],
    "mixed, dates cyclical, frequency-encoded": ["--dates", "cyclical", "--max-onehot", "0"],
    "mixed, no missing indicators": ["--no-missing-indicators"],
    "mixed, categories balanced": ["--balance-categories"],
    "diag: blanks only (numeric, median-imputed, no indicators)": ["--no-missing-indicators"],
    "diag: binned only (no blanks, no timestamp)": [],
    "diag: binned only, categories balanced": ["--balance-categories"],
    "diag: timestamp only (dates cyclical)": ["--dates", "cyclical"],
}
DEFAULT_ARMS = ("numeric", "mixed (defaults)", "mixed, dates cyclical", "diag: binned only (no blanks, no timestamp)",
                "catboost (mixed, native categories)")
BINNED, BINS, BLANK_SHARE = 3, 5, 0.02


PARTS = {"diag: blanks only (numeric, median-imputed, no indicators)": ("blanks",),
         "diag: binned only (no blanks, no timestamp)": ("bins",),
         "diag: binned only, categories balanced": ("bins",), "diag: timestamp only (dates cyclical)": ("ts",)}


def make_mixed(X: np.ndarray, rng: np.random.Generator, parts=("bins", "ts", "blanks")) -> tuple[pd.DataFrame, list[str]]:
    """The numeric table as a mixed one (see the module docstring); returns it and the binned
    columns. ``parts`` leaves steps out (diagnostic arms); the random draws are the same."""
    frame = pd.DataFrame({f"x{j}": X[:, j].astype(np.float64) for j in range(X.shape[1])}).astype(object)
    distinct = np.array([len(np.unique(X[:, j])) for j in range(X.shape[1])])
    binned = [f"x{j}" for j in np.argsort(-distinct, kind="stable")[:BINNED]]
    for c in binned if "bins" in parts else []:
        values = X[:, int(c[1:])]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
        frame[c] = [f"bin{k}" for k in np.searchsorted(edges, values, side="right")]
    start = pd.Timestamp("2025-01-01").value // 10**9
    ts = pd.to_datetime(start + rng.integers(0, 365 * 86_400, len(frame)), unit="s").strftime("%Y-%m-%d %H:%M:%S")
    if "ts" in parts:
        frame["ts"] = ts
    blank = rng.random((frame.shape[0], frame.shape[1] + ("ts" not in parts))) < BLANK_SHARE
    if "blanks" in parts:
        frame = frame.mask(blank[:, :frame.shape[1]], "")
    return frame, binned if "bins" in parts else []


def catboost_scores(train: pd.DataFrame, y: np.ndarray, test: pd.DataFrame, binned: list[str], seed: int) -> np.ndarray:
    from catboost import CatBoostClassifier

    from rlad.algorithms.peers import CatBoostConfig
    from dataclasses import asdict

    def prepare(f: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=f.index)
        for c in f.columns:
            if c in binned:
                out[c] = f[c].replace("", "missing").astype(str)
            elif c == "ts" and c in f:
                out[c] = pd.to_datetime(f[c].replace("", None)).astype("int64") // 10**9
                out.loc[f[c] == "", c] = np.nan
            else:
                out[c] = pd.to_numeric(f[c].replace("", np.nan))
        return out

    cfg = asdict(CatBoostConfig(random_seed=seed))
    model = CatBoostClassifier(verbose=0, allow_writing_files=False, cat_features=binned, **cfg)
    model.fit(prepare(train), y)
    return model.predict_proba(prepare(test))[:, 1]


def run(datasets, seeds, arms, max_rows, out_csv: Path, detector: str) -> None:
    import torch

    from rlad.algorithms.registry import build_detector, load_detector
    from rlad.core.tables import read_training_table
    from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
    from rlad.core.metrics import auc_scores
    from rlad.platform.cli.main import main as rlad

    torch.set_num_threads(1)
    new = not out_csv.exists()
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "a", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        w = csv.writer(f)
        if new:
            w.writerow(["dataset", "seed", "arm", "auc_roc", "auc_pr", "n_features", "fit_s"])
        for name in datasets:
            ds = load_dataset(adbench_file(name))
            for seed in seeds:
                split = adbench_split(ds, SplitConfig(max_rows=max_rows, la=0.1, seed=seed))
                X_all = np.vstack([split.X_train, split.X_test])
                n = len(split.X_train)
                tr_csv, te_csv = Path(tmp, "train.csv"), Path(tmp, "test.csv")

                def tables(parts=("bins", "ts", "blanks")):
                    mixed, binned = make_mixed(X_all, np.random.default_rng(seed), parts)
                    train, test = mixed.iloc[:n].reset_index(drop=True), mixed.iloc[n:].reset_index(drop=True)
                    train.assign(label=split.y_train_semi).to_csv(tr_csv, index=False)
                    test.to_csv(te_csv, index=False)
                    return train, test, binned

                def record(arm: str, scores: np.ndarray, width: int, secs: float) -> None:
                    m = auc_scores(split.y_test, scores)
                    w.writerow([name, seed, arm, f"{m['auc_roc']:.4f}", f"{m['auc_pr']:.4f}", width, f"{secs:.1f}"])
                    f.flush()
                    print(f"{name:16s} seed {seed} {arm:42s} roc {m['auc_roc']:.4f} pr {m['auc_pr']:.4f} ({width} features, {secs:.0f} s)", flush=True)

                for arm in arms:
                    t = time.perf_counter()
                    if arm == "numeric":
                        det = build_detector("scaled", {"detector": detector}, seed=seed).fit(split.X_train, split.y_train_semi)
                        record(arm, det.decision_function(split.X_test), split.X_train.shape[1], time.perf_counter() - t)
                    elif arm.startswith("catboost"):
                        train, test, binned = tables()
                        record(arm, catboost_scores(train, split.y_train_semi, test, binned, seed), train.shape[1], time.perf_counter() - t)
                    else:
                        tables(PARTS.get(arm, ("bins", "ts", "blanks")))
                        pt = Path(tmp, "model.pt")
                        code = rlad(["fit", detector, "--data", str(tr_csv), "--label-column", "label", "--save", str(pt),
                                     "--seed", str(seed), *ARMS[arm]])
                        assert code == 0, f"rlad fit failed ({code})"
                        model = load_detector(pt)
                        scores = model.decision_function(read_training_table(te_csv).frame)
                        record(arm, scores, model.n_features_in_, time.perf_counter() - t)


def summarize(paths: list[Path], out: Path | None) -> None:
    from rlad.core.metrics import wtl_wilcoxon

    runs = pd.concat([pd.read_csv(p) for p in paths])
    runs["seeds"] = np.where(runs["seed"] <= 2, "0-2", "3-5")
    rows = []
    for group, g in runs.groupby("seeds"):
        pivot = g.pivot_table(index=["dataset", "seed"], columns="arm", values="auc_roc")
        for arm, a in g.groupby("arm"):
            row = {"seeds": group, "arm": arm, "runs": len(a), "AUC-ROC": f"{a.auc_roc.mean():.4f}",
                   "AUC-PR": f"{a.auc_pr.mean():.4f}", "features": f"{a.n_features.mean():.0f}"}
            if arm != "numeric" and "numeric" in pivot:
                both = pivot[[arm, "numeric"]].dropna()
                row["vs numeric"] = f"{(both[arm] - both['numeric']).mean():+.4f}"
                row["W/T/L"], p = wtl_wilcoxon(both[arm], both["numeric"], 0.001)
                row["Wilcoxon p"] = "1" if np.isnan(p) else f"{p:.3g}"  # nan: no run differs
            else:
                row.update({"vs numeric": "", "W/T/L": "", "Wilcoxon p": ""})
            rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if out is not None:
        table.to_csv(out, index=False)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help="'all' = every ablation arm")
    ap.add_argument("--detector", default=DETECTOR)
    ap.add_argument("--max-rows", type=int, default=2000)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/results/mixed_tables_runs.csv"), help="per-run rows (appended)")
    ap.add_argument("--summarize", nargs="+", type=Path, default=None, metavar="RUNS_CSV")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mixed_tables.csv"))
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize, a.out)
    else:
        arms = ["numeric", *ARMS, "catboost (mixed, native categories)"] if a.arms == ["all"] else a.arms
        run(a.datasets, a.seeds, arms, a.max_rows, a.runs, a.detector)
