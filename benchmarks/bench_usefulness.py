"""Usefulness of candidate sets (issue 28): how well the cheap proxy ranks sets against the
reference, and the reference's throughput on a pool of 1 and 2 Ray actors (prints figures; not a
test).

Per ADBench data set and seed (la = 0.1): the large detector (``--members`` networks) is fitted on
the fit share of the honest validation split; candidate sets of ``set_size`` rows come from
NNG-Mix, SMOTE and copies of unlabelled rows (``--sets`` of each). Printed: the Spearman rank
correlation of the gradient-alignment proxy (mean over a set) with the reference (validation
AUC-PR change after a short update), and sets/s of the reference in this process and on
``UsefulnessPool`` with 1 and 2 workers (``init_ray(num_cpus=2)``). ``--csv`` writes the rows.

    python benchmarks/bench_usefulness.py --datasets Ionosphere breastw --seeds 0
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from rlad.algorithms.augmentation import nng_mix, smote
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.swift_hydra import large_detector_config
from rlad.algorithms.usefulness import (GradientAlignment, UsefulnessConfig, UsefulnessPool, honest_validation,
                                        reference_usefulness, split_sets)
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet


def one(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(la=0.1, max_rows=args.max_rows, seed=seed))
    X, y = split.X_train, split.y_train_semi
    fit, val = honest_validation(y, UsefulnessConfig().val_share, seed)
    det = MambaMoEDetector(dataclasses.replace(large_detector_config(), members=args.members, seed=seed)).fit(X[fit], y[fit])
    cfg = UsefulnessConfig()
    rng = np.random.default_rng(seed)
    n = args.sets * cfg.set_size
    rows = [nng_mix(X[fit], y[fit], n, rng), smote(X[fit], y[fit], n, rng),
            X[fit][rng.choice(np.flatnonzero(y[fit] == 0), n)]]
    sets = [s for r in rows for s in split_sets(r, cfg.set_size)]
    start = time.perf_counter()
    ref = reference_usefulness(det, X[fit], y[fit], X[val], y[val], sets, cfg, seed)
    local_s = time.perf_counter() - start
    proxy = GradientAlignment(det, X[val], y[val])
    prox = np.array([proxy(s).mean() for s in sets])
    out = {"dataset": name, "seed": seed, "sets": len(sets), "spearman": float(spearmanr(prox, ref).statistic),
           "in-process sets/s": len(sets) / local_s}
    for workers in (1, 2):
        pool = UsefulnessPool(dataclasses.replace(cfg, workers=workers))
        try:
            pool.set_round(det, X[fit], y[fit], X[val], y[val])
            pool.score(sets[:workers], seed)  # warm-up: the actors import torch and rlad
            start = time.perf_counter()
            remote = pool.score(sets, seed)
            out[f"{workers} worker(s) sets/s"] = len(sets) / (time.perf_counter() - start)
        finally:
            pool.close()
        assert np.allclose(remote, ref, atol=1e-6)
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["Ionosphere", "breastw"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--sets", type=int, default=8, help="sets per source (NNG-Mix, SMOTE, unlabelled copies)")
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--max-rows", type=int, default=1000)
    p.add_argument("--csv", default=None, help="write the rows here")
    args = p.parse_args()
    quiet()
    torch.set_num_threads(1)
    init_ray(num_cpus=2)
    rows = [one(name, seed, args) for name in args.datasets for seed in args.seeds]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(rows[0]))
            w.writerows([[f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows])


if __name__ == "__main__":
    main()
