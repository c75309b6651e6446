"""How Swift Hydra's large Mamba detector is trained on small semi-supervised data (prints
figures; not a test).

Per ADBench development data set and seed (la = 0.1, rows capped at 3,000, the split of
``bench_swift_hydra_ablation.py``), side by side on the same split, the large detector alone:

- ``plain``: as before rank features (features only, 10 epochs, one network);
- ``ranks``: each feature's rank among the training rows appended (``rank_features``), at most
  ``unvalidated_epochs`` (5) epochs without a validation split, one network;
- ``members``: the same with three independently trained networks averaged (``members=3``);
- ``default``: the same with the neighbour distance as one more column (``knn_feature``);
- ``catboost``: supervised CatBoost on the labelled rows, when the ``[peers]`` extra is installed.

Printed: per data set AUC-ROC / AUC-PR, then the means, wins/ties/losses against ``plain`` and
the fit time.

    python benchmarks/bench_mamba_moe_training.py                  # 12 data sets x seeds 0 1 2
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time

import torch

from bench_swift_hydra_ablation import DATASETS, method_table  # the same development sets (this script's folder is on sys.path)
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.registry import make_detector
from rlad.algorithms.swift_hydra import large_detector_config
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.metrics import auc_scores

METHODS = {"plain": dict(rank_features=False, knn_feature=0, epochs=10, unvalidated_epochs=10, members=1),
           "ranks": dict(members=1, knn_feature=0), "members": dict(knn_feature=0), "default": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    torch.set_num_threads(1)
    results: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for name in args.datasets:
        for seed in args.seeds:
            split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(la=0.1, max_rows=3000, seed=seed))
            if split.y_train_semi.sum() == 0:
                continue
            row = {}
            for label, changes in METHODS.items():
                cfg = dataclasses.replace(large_detector_config(), seed=seed, **changes)
                start = time.perf_counter()
                det = MambaMoEDetector(cfg).fit(split.X_train, split.y_train_semi)
                row[label] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
            if importlib.util.find_spec("catboost") is not None:
                start = time.perf_counter()
                det = make_detector("catboost").fit(split.X_train, split.y_train_semi)
                row["catboost"] = {**auc_scores(split.y_test, det.decision_function(split.X_test)), "fit_s": time.perf_counter() - start}
            results[name, seed] = row
            print(f"{name:18s} seed {seed}: " + "  ".join(f"{m} {r['auc_roc']:.3f}/{r['auc_pr']:.3f}" for m, r in row.items()), flush=True)
    method_table(results, "plain")


if __name__ == "__main__":
    main()
