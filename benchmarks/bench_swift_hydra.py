"""Swift Hydra benchmark (prints figures; not a test).

1. Test AUC-ROC / AUC-PR of the Mamba-MoE detector before augmentation (round 0) vs after the
   last round, per dataset, same seed and split.
2. Synthesis-env steps/s (walker steps) with Serve-backed vs in-process scoring, and with one
   walker per scorer call vs a batched vector env, measured side by side in one run. ``serve``
   is the default ``ServeScorer`` (requests and results over the replica's gRPC channel),
   ``serve-refs`` the same through Ray object references.
3. Where a Serve call's time goes at the rollout's walker count: the detector's own scoring (in
   this process, one thread: what the replica computes), the whole call through ``ServeScorer``,
   and the round trip of an empty deployment with the same ``@serve.batch`` (Serve's own cost),
   with the env ratio that even that empty round trip would allow.

    python benchmarks/bench_swift_hydra.py --datasets thyroid cardio breastw --rounds 2
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from ray import serve

from rlad.algorithms.beta_vae import BetaVAEConfig, train_beta_vae
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.swift_hydra import LocalScorer, RolloutConfig, SwiftHydra, SwiftHydraConfig, large_detector_config
from rlad.envs.latent_synthesis_env import LatentSynthesisVecEnv
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet
from rlad.platform.runtime.serving import (BATCH_WAIT_S, MAX_BATCH_SIZE, MAX_ONGOING_REQUESTS, ServeOptions, ServeScorer,
                                          ServeScoring, deploy_detector)


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config={"enable_access_log": False})
class EmptyServer:
    """``DetectorServer``'s request path without the detector: what Serve alone costs a call."""

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _score_batch(self, batches: list[np.ndarray]) -> list[dict]:
        return [{"proba": np.zeros(len(X), np.float32)} for X in batches]

    async def __call__(self, X: np.ndarray) -> dict:
        return await self._score_batch(X)


def per_call_ms(call, X: np.ndarray, calls: int) -> float:
    """Mean milliseconds of ``call(X)`` over ``calls`` calls, after 10 to warm up."""
    for _ in range(10):
        call(X)
    t = time.perf_counter()
    for _ in range(calls):
        call(X)
    return (time.perf_counter() - t) / calls * 1e3


def auc_table(args) -> None:
    print(f"{'dataset':<14}{'rows':>6}{'feat':>5}{'auc_roc before':>16}{'after':>8}{'auc_pr before':>15}{'after':>8}{'synthetic':>10}")
    for name in args.datasets:
        split = adbench_split(load_dataset(adbench_file(name)), SplitConfig(max_rows=args.max_rows, la=args.la, seed=args.seed))
        cfg = SwiftHydraConfig(rounds=args.rounds, ppo_iterations=args.ppo_iterations, seed=args.seed)
        if args.epochs is not None:
            cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, epochs=args.epochs))
        loop = SwiftHydra(cfg, workdir=f"runs/bench_swift_hydra/{name}", log=lambda _: None, scoring=ServeScoring())
        loop.run(split.X_train, split.y_train_semi, split.X_test, split.y_test)
        b, a = loop.history[0], loop.history[-1]
        print(f"{split.name:<14}{len(split.X_train):>6}{split.n_features:>5}{b['auc_roc']:>16.4f}{a['auc_roc']:>8.4f}"
              f"{b['auc_pr']:>15.4f}{a['auc_pr']:>8.4f}{a['n_synthetic']:>10}", flush=True)


def env_throughput(args) -> None:
    split = adbench_split(load_dataset(adbench_file("cardio")), SplitConfig(la=0.3, seed=args.seed))
    # the detector the loop's walkers query: the large one (its size, not its accuracy, matters here)
    det = MambaMoEDetector(dataclasses.replace(large_detector_config(), epochs=2)).fit(split.X_train, split.y_train_semi)
    vae = train_beta_vae(split.X_train, split.y_train_semi, BetaVAEConfig(epochs=5))
    anchors = vae.anomaly_anchors(split.X_train[split.y_train_semi == 1])
    path = det.save("runs/bench_swift_hydra/env_detector.pt")
    deploy_detector(str(path), ServeOptions(app_name="bench-detector", num_cpus=0.5))
    scorers = {"in-process": LocalScorer(det), "serve": ServeScorer("bench-detector"),
               "serve-refs": ServeScorer("bench-detector", by_reference=True)}
    print(f"\n{'scorer':<12}{'walkers/call':>13}{'walker steps/s':>16}")
    rates = {}
    for num_envs in args.walkers:
        for label, scorer in scorers.items():
            env = LatentSynthesisVecEnv(num_envs, vae, anchors, split.X_train, scorer, seed=0)
            env.reset()
            actions = np.random.default_rng(0).uniform(-1, 1, (args.env_steps, num_envs, vae.latent_dim)).astype(np.float32)
            t = time.perf_counter()
            for a in actions:
                env.step(a)
            rates[label, num_envs] = args.env_steps * num_envs / (time.perf_counter() - t)
            print(f"{label:<12}{num_envs:>13}{rates[label, num_envs]:>16.0f}", flush=True)
    for n in args.walkers:
        print(f"serve / in-process at {n} walkers/call: {rates['serve', n] / rates['in-process', n]:.2f} "
              f"(object references instead of gRPC: {rates['serve-refs', n] / rates['in-process', n]:.2f})")
    most = max(args.walkers)
    print(f"serve batched ({most}) / serve single: {rates['serve', most] / rates['serve', min(args.walkers)]:.1f}x")
    call_breakdown(scorers, vae, anchors, split.X_train, rates, args)


def call_breakdown(scorers: dict, vae, anchors: np.ndarray, X_train: np.ndarray, rates: dict, args) -> None:
    """Part 3 of the module docstring, on the rows the walkers decode at the rollout's walker count."""
    n = RolloutConfig.num_envs_per_runner
    env = LatentSynthesisVecEnv(n, vae, anchors, X_train, scorers["in-process"], seed=0)
    env.reset()
    X = env.last_samples
    serve.run(EmptyServer.options(ray_actor_options={"num_cpus": 0.5}).bind(), name="bench-empty", route_prefix=None)
    ms = {"scoring (detector alone)": per_call_ms(scorers["in-process"], X, args.env_steps),
          "serve call": per_call_ms(scorers["serve"], X, args.env_steps),
          "empty deployment call": per_call_ms(ServeScorer("bench-empty"), X, args.env_steps)}
    print(f"\nwhere a Serve call's time goes ({n} rows a call, ms):")
    for label, v in ms.items():
        print(f"  {label:<26}{v:6.2f}")
    print(f"  {'serve call - scoring':<26}{ms['serve call'] - ms['scoring (detector alone)']:6.2f}")
    if ("in-process", n) in rates:
        step = 1e3 * n / rates["in-process", n]
        print(f"in-process env step {step:.2f} ms: with only the empty deployment's round trip added, "
              f"the Serve-backed env would run at {step / (step + ms['empty deployment call']):.2f}x in-process")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["thyroid", "cardio", "breastw", "Stamps"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ppo-iterations", type=int, default=4)
    p.add_argument("--epochs", type=int, default=None, help="large detector epochs at most (default: its own)")
    p.add_argument("--la", type=float, default=0.1)
    p.add_argument("--max-rows", type=int, default=3000)
    p.add_argument("--walkers", type=int, nargs="+", default=[1, RolloutConfig.num_envs_per_runner, 32],
                   help="walkers per scorer call (default: 1, the rollout default, 32)")
    p.add_argument("--env-steps", type=int, default=200)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-auc", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    quiet()  # our figures, not Ray's INFO lines
    init_ray(num_cpus=args.num_cpus)
    env_throughput(args)
    if not args.skip_auc:
        auc_table(args)


if __name__ == "__main__":
    main()
