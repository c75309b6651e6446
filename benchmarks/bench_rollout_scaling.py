"""Rollout throughput vs number of env runners (prints figures; not a test).

Builds the Swift Hydra PPO setup for each runner count and times parallel sampling only
(``EnvRunner.sample`` on every runner at once), with Serve-backed or in-process scoring.
On a single machine the curve flattens at the core count; on a cluster (cluster.yaml) add
rollout nodes and pass ``--address auto``.

    python benchmarks/bench_rollout_scaling.py --runners 1 2 --num-cpus 3
"""
from __future__ import annotations

import argparse
import time

import torch

from rlad.algorithms.beta_vae import BetaVAEConfig, train_beta_vae
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.swift_hydra import LocalScorer, RolloutConfig, SwiftHydraConfig, SynthesisPPO, SynthesisRound
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet
from rlad.platform.runtime.serving import ServeOptions, ServeScorer, deploy_detector


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runners", type=int, nargs="+", default=[1, 2])
    p.add_argument("--envs-per-runner", type=int, default=16)
    p.add_argument("--steps", type=int, default=2000, help="env steps sampled per runner per trial")
    p.add_argument("--scorer", choices=["serve", "local"], default="serve")
    p.add_argument("--num-cpus", type=int, default=3)
    p.add_argument("--address", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    quiet()  # our figures, not Ray's INFO lines
    init_ray(num_cpus=args.num_cpus, address=args.address)

    split = adbench_split(load_dataset(adbench_file("cardio")), SplitConfig(la=0.3))
    det = MambaMoEDetector(epochs=2).fit(split.X_train, split.y_train_semi)
    vae = train_beta_vae(split.X_train, split.y_train_semi, BetaVAEConfig(epochs=5))
    anchors = vae.anomaly_anchors(split.X_train[split.y_train_semi == 1])
    if args.scorer == "serve":
        deploy_detector(str(det.save("runs/bench_rollout/detector.pt")), ServeOptions(app_name="bench-rollout", num_cpus=0.5))
        scorer = ServeScorer("bench-rollout")
    else:
        scorer = LocalScorer(det)

    print(f"{'env runners':>11}{'env steps/s':>13}{'vs 1 runner':>13}")
    base = None
    for n in args.runners:
        cfg = SwiftHydraConfig(rollout=RolloutConfig(num_env_runners=n, num_envs_per_runner=args.envs_per_runner))
        ppo = SynthesisPPO(cfg, SynthesisRound(scorer, vae, anchors, split.X_train, cfg.env.w_div_at(1)))
        algo = ppo.algo
        steps = args.steps
        algo.env_runner_group.foreach_env_runner(lambda r: r.sample(num_timesteps=200), local_env_runner=False)  # warm-up
        t = time.perf_counter()
        algo.env_runner_group.foreach_env_runner(lambda r: r.sample(num_timesteps=steps), local_env_runner=False)
        rate = n * steps / (time.perf_counter() - t)
        base = base or rate
        print(f"{n:>11}{rate:>13.0f}{rate / base:>13.2f}", flush=True)
        ppo.stop()


if __name__ == "__main__":
    main()
