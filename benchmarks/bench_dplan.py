"""Benchmark: DPLAN vs IForest (PyOD) on ADBench datasets under DPLAN's protocol (60 labelled
anomalies, unlabelled rows at 2% contamination), with DPLAN's throughput, side by side.

    python benchmarks/bench_dplan.py                  # quick: 3,000 env steps per run, a few minutes
    python benchmarks/bench_dplan.py --full --seeds 0 1 2   # the paper's budget (30,000 steps per run)

``train steps/s``: env steps sampled per second of DPLAN training (gradient updates included);
``env steps/s``: the bare environment's step rate (random actions, no RLlib).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import ray
import torch
from pyod.models.iforest import IForest

from rlad.algorithms.dplan import DPLANConfig, DPLANDetector
from rlad.envs.dplan_env import DPLANEnv
from rlad.platform.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.platform.core.metrics import auc_scores
from rlad.platform.core.ray_init import init_ray

QUICK = dict(episodes=5, steps_per_episode=500, warmup_steps=500, epsilon_steps=1000, target_update_freq=500)


def env_steps_per_s(X: np.ndarray, y: np.ndarray, cfg: DPLANConfig, n_steps: int = 5000) -> float:
    env = DPLANEnv({"X": X, "y": y, "p": cfg.p, "n_candidates": cfg.n_candidates, "steps_per_episode": n_steps})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    env.set_hidden_layer(rng.normal(size=(cfg.hidden, X.shape[1])), rng.normal(size=cfg.hidden))
    actions = rng.integers(2, size=n_steps)
    start = time.perf_counter()
    for a in actions:
        env.step(int(a))
    return n_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["cardio", "thyroid", "annthyroid", "Cardiotocography"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--full", action="store_true", help="the paper's budget instead of the quick one")
    parser.add_argument("--num-env-runners", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    init_ray(num_cpus=args.num_cpus)
    cfg = DPLANConfig(num_env_runners=args.num_env_runners, num_cpus=args.num_cpus, **({} if args.full else QUICK))
    print(f"DPLAN budget: {cfg.warmup_steps} warm-up + {cfg.episodes} x {cfg.steps_per_episode} env steps; seeds {args.seeds}")
    header = f"{'dataset':18s} {'train':>6s} {'d':>4s} | {'DPLAN roc':>9s} {'pr':>6s} | {'IForest roc':>11s} {'pr':>6s} | {'fit s':>6s} {'train st/s':>10s} {'env st/s':>9s}"
    print(header + "\n" + "-" * len(header), flush=True)
    rows = []
    for name in args.datasets:
        ds = load_dataset(adbench_file(name))
        res = []
        for seed in args.seeds:
            split = adbench_split(ds, SplitConfig(n_labeled_anomalies=60, contamination=0.02, seed=seed))
            det = DPLANDetector(dataclasses.replace(cfg, seed=seed), contamination=0.02)
            start = time.perf_counter()
            det.fit(split.X_train, split.y_train_semi)
            fit_s = time.perf_counter() - start
            dplan = auc_scores(split.y_test, det.decision_function(split.X_test))
            iforest = auc_scores(split.y_test, IForest(random_state=seed).fit(split.X_train).decision_function(split.X_test))
            raw = env_steps_per_s(split.X_train, split.y_train_semi, cfg)
            res.append([dplan["auc_roc"], dplan["auc_pr"], iforest["auc_roc"], iforest["auc_pr"], fit_s, det.env_steps_per_s_, raw])
        m = np.mean(res, axis=0)
        rows.append(m)
        print(
            f"{split.name:18s} {split.X_train.shape[0]:6d} {split.n_features:4d} | {m[0]:9.4f} {m[1]:6.4f} | {m[2]:11.4f} {m[3]:6.4f} | "
            f"{m[4]:6.1f} {m[5]:10.1f} {m[6]:9.0f}",
            flush=True,
        )
    m = np.mean(rows, axis=0)
    print("-" * len(header))
    print(f"{'mean':30s} | {m[0]:9.4f} {m[1]:6.4f} | {m[2]:11.4f} {m[3]:6.4f} | {m[4]:6.1f} {m[5]:10.1f} {m[6]:9.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
