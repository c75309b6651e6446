"""How the Mamba-MoE detector is trained on small semi-supervised data (prints figures; not a test).

Per ADBench development data set and seed (la = 0.1, rows capped at 3,000, the split of
``bench_swift_hydra_ablation.py``), side by side on the same split: Swift Hydra's large detector
trained as before (one 256-row mini-batch per epoch on small data sets, early stopping on as few
as 2 held-out labelled anomalies), as now (``min_batches=8``, ``min_val_anomalies=4``), and
supervised CatBoost on the labelled rows when the ``[peers]`` extra is installed. Printed: per
data set AUC-ROC / AUC-PR, then the means and the fit time.

    python benchmarks/bench_mamba_moe_training.py                  # 12 data sets x seeds 0 1
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time

import numpy as np
import torch

from bench_swift_hydra_ablation import DATASETS  # the same development sets (this script's folder is on sys.path)
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.registry import make_detector
from rlad.algorithms.swift_hydra import large_detector_config
from rlad.platform.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.platform.core.metrics import auc_scores

BEFORE = dict(min_batches=1, min_val_anomalies=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=10, help="as in bench_swift_hydra_ablation.py")
    args = p.parse_args()
    torch.set_num_threads(1)
    methods = {"before": BEFORE, "now": {}}
    results: dict[str, list[dict[str, float]]] = {}
    for name in args.datasets:
        for seed in args.seeds:
            split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(la=0.1, max_rows=3000, seed=seed))
            if split.y_train_semi.sum() == 0:
                continue
            row = {}
            for label, changes in methods.items():
                cfg = dataclasses.replace(large_detector_config(), epochs=args.epochs, seed=seed, **changes)
                start = time.perf_counter()
                det = MambaMoEDetector(cfg).fit(split.X_train, split.y_train_semi)
                row[label] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
            if importlib.util.find_spec("catboost") is not None:
                start = time.perf_counter()
                det = make_detector("catboost").fit(split.X_train, split.y_train_semi)
                row["catboost"] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
            for label, r in row.items():
                results.setdefault(label, []).append(r)
            print(f"{name:18s} seed {seed}: " + "  ".join(f"{m} {r['auc_roc']:.3f}/{r['auc_pr']:.3f}" for m, r in row.items()), flush=True)
    print(f"\n{'method':10s} {'runs':>4s} {'AUC-ROC':>8s} {'AUC-PR':>7s} {'fit s':>6s}")
    for label, rows in results.items():
        print(f"{label:10s} {len(rows):4d} {np.mean([r['auc_roc'] for r in rows]):8.4f} "
              f"{np.mean([r['auc_pr'] for r in rows]):7.4f} {np.mean([r['fit_s'] for r in rows]):6.1f}")


if __name__ == "__main__":
    main()
