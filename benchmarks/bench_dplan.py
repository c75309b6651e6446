"""Benchmark: DPLAN vs IForest (PyOD) on ADBench datasets under DPLAN's protocol (60 labelled
anomalies, unlabelled rows at 2% contamination), with DPLAN's throughput against a bare-PyTorch DQN
of the same size, side by side.

    python benchmarks/bench_dplan.py                  # quick: 3,000 env steps per run, a few minutes
    python benchmarks/bench_dplan.py --full --seeds 0 1 2   # the paper's budget (30,000 steps per run)

``rllib st/s``: env steps per second of DPLAN on RLlib once learning has started (one gradient
update per env step), from the end of the first training episode to the end of the last;
``bare st/s``: the same for :func:`bare_dqn_steps_per_s`, the same DQN (d -> 20 -> 2, batch 32,
centred RMSprop, one update per step, same env, same per-episode hidden-layer refresh) as one
plain PyTorch loop on one thread; ``ratio`` = rllib / bare; ``env st/s``: the env alone (random
actions). The process runs torch on one thread (``torch.set_num_threads(1)``).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import ray
import torch
import torch.nn.functional as F
from pyod.models.iforest import IForest

from rlad.algorithms.dplan import DPLANConfig, DPLANDetector, DPLANRuntime, QNetwork
from rlad.envs.dplan_env import DPLANEnv
from rlad.core.data import SplitConfig, adbench_file, adbench_split, load_dataset
from rlad.core.metrics import auc_scores
from rlad.core.ray_init import init_ray
from rlad.core.verbosity import quiet

QUICK = dict(episodes=5, steps_per_episode=500, warmup_steps=500, epsilon_steps=1000, target_update_freq=500)


def make_env(X: np.ndarray, y: np.ndarray, cfg: DPLANConfig, refresh_every: int) -> DPLANEnv:
    return DPLANEnv({"X": X, "y": y, "p": cfg.p, "n_candidates": cfg.n_candidates, "refresh_every": refresh_every,
                     "iforest_estimators": cfg.iforest_estimators, "intrinsic_weight": cfg.intrinsic_weight})


def env_steps_per_s(X: np.ndarray, y: np.ndarray, cfg: DPLANConfig, n_steps: int = 5000) -> float:
    env = make_env(X, y, cfg, n_steps)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    env.set_hidden_layer(rng.normal(size=(cfg.hidden, X.shape[1])), rng.normal(size=cfg.hidden))
    actions = rng.integers(2, size=n_steps)
    start = time.perf_counter()
    for a in actions:
        env.step(int(a))
    return n_steps / (time.perf_counter() - start)


def bare_dqn_steps_per_s(X: np.ndarray, y: np.ndarray, cfg: DPLANConfig) -> float:
    """DPLAN's DQN as one plain PyTorch loop (uniform replay, epsilon-greedy, Huber TD loss, target
    copies, hidden-layer refresh at each episode start): env steps/s after the first episode of
    learning, measured like the RLlib run's."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(X, y, cfg, cfg.steps_per_episode)
    net = QNetwork(X.shape[1], cfg.hidden)
    target = QNetwork(X.shape[1], cfg.hidden)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps, centered=True)
    cap = min(cfg.replay_capacity, cfg.warmup_steps + cfg.episodes * cfg.steps_per_episode)
    obs_buf, next_buf = np.zeros((cap, X.shape[1]), np.float32), np.zeros((cap, X.shape[1]), np.float32)
    act_buf, rew_buf = np.zeros(cap, np.int64), np.zeros(cap, np.float32)
    total = cfg.warmup_steps + cfg.episodes * cfg.steps_per_episode
    timed_from = cfg.warmup_steps + cfg.steps_per_episode
    obs, done = None, True
    for t in range(total):
        if t == timed_from:
            start = time.perf_counter()
        if done:
            obs, _ = env.reset(seed=cfg.seed + t)
            env.set_hidden_layer(net.hidden.weight.detach().numpy(), net.hidden.bias.detach().numpy())
        eps = max(cfg.epsilon_end, cfg.epsilon_start + (cfg.epsilon_end - cfg.epsilon_start) * t / cfg.epsilon_steps)
        if rng.random() < eps:
            action = int(rng.integers(2))
        else:
            with torch.no_grad():
                action = int(net(torch.from_numpy(obs)[None]).argmax())
        next_obs, reward, _, done, _ = env.step(action)
        i = t % cap
        obs_buf[i], act_buf[i], rew_buf[i], next_buf[i] = obs, action, reward, next_obs
        obs = next_obs
        if t + 1 >= cfg.warmup_steps:
            idx = torch.from_numpy(rng.integers(min(t + 1, cap), size=cfg.batch_size))
            with torch.no_grad():
                q_next = target(torch.from_numpy(next_buf[idx])).max(1).values
            q = net(torch.from_numpy(obs_buf[idx])).gather(1, torch.from_numpy(act_buf[idx])[:, None]).squeeze(1)
            loss = F.smooth_l1_loss(q, torch.from_numpy(rew_buf[idx]) + cfg.gamma * q_next)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (t + 1) % cfg.target_update_freq == 0:
            target.load_state_dict(net.state_dict())
    return (total - timed_from) / (time.perf_counter() - start)


def rllib_fit(split, cfg: DPLANConfig) -> tuple[DPLANDetector, float, float]:
    """Fit DPLAN; return it, the fit time and its steps/s from the end of the first learning episode."""
    det = DPLANDetector(cfg, contamination=0.02)
    marks: list[tuple[float, float]] = []
    det.on_episode = lambda summary, _: marks.append((summary["env_steps"], time.perf_counter()))
    start = time.perf_counter()
    det.fit(split.X_train, split.y_train_semi)
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return det, time.perf_counter() - start, (s1 - s0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["cardio", "thyroid", "annthyroid", "Cardiotocography"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--full", action="store_true", help="the paper's budget instead of the quick one")
    parser.add_argument("--num-env-runners", type=int, default=0, help="remote EnvRunners (0: sample in the driver)")
    parser.add_argument("--rollout-fragment-length", type=int, default=DPLANConfig.rollout_fragment_length,
                        help="env steps between update rounds (one gradient update per env step either way)")
    parser.add_argument("--num-envs-per-env-runner", type=int, default=DPLANConfig.num_envs_per_env_runner,
                        help="vectorised sub-envs per EnvRunner")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()

    torch.set_num_threads(1)
    quiet()  # our figures, not Ray's INFO lines
    init_ray(num_cpus=args.num_cpus)
    cfg = DPLANConfig(runtime=DPLANRuntime(num_env_runners=args.num_env_runners, num_cpus=args.num_cpus),
                      rollout_fragment_length=args.rollout_fragment_length,
                      num_envs_per_env_runner=args.num_envs_per_env_runner, floor_weight=0.0,  # Q alone, as the bare DQN
                      **({} if args.full else QUICK))
    print(f"DPLAN budget: {cfg.warmup_steps} warm-up + {cfg.episodes} x {cfg.steps_per_episode} env steps; "
          f"fragment {cfg.rollout_fragment_length} x {cfg.num_envs_per_env_runner} sub-envs; seeds {args.seeds}")
    header = (f"{'dataset':18s} {'train':>6s} {'d':>4s} | {'DPLAN roc':>9s} {'pr':>6s} | {'IForest roc':>11s} {'pr':>6s} | "
              f"{'fit s':>6s} {'rllib st/s':>10s} {'bare st/s':>9s} {'ratio':>5s} {'env st/s':>8s}")
    print(header + "\n" + "-" * len(header), flush=True)
    rows = []
    for name in args.datasets:
        ds = load_dataset(adbench_file(name))
        res = []
        for seed in args.seeds:
            split = adbench_split(ds, SplitConfig(n_labeled_anomalies=60, contamination=0.02, seed=seed))
            run_cfg = dataclasses.replace(cfg, seed=seed)
            det, fit_s, rllib_rate = rllib_fit(split, run_cfg)
            bare_rate = bare_dqn_steps_per_s(split.X_train, split.y_train_semi, run_cfg)
            dplan = auc_scores(split.y_test, det.decision_function(split.X_test))
            iforest = auc_scores(split.y_test, IForest(random_state=seed).fit(split.X_train).decision_function(split.X_test))
            raw = env_steps_per_s(split.X_train, split.y_train_semi, cfg)
            res.append([dplan["auc_roc"], dplan["auc_pr"], iforest["auc_roc"], iforest["auc_pr"], fit_s, rllib_rate, bare_rate,
                        rllib_rate / bare_rate, raw])
        m = np.mean(res, axis=0)
        rows.append(m)
        print(f"{split.name:18s} {split.X_train.shape[0]:6d} {split.n_features:4d} | {m[0]:9.4f} {m[1]:6.4f} | {m[2]:11.4f} "
              f"{m[3]:6.4f} | {m[4]:6.1f} {m[5]:10.1f} {m[6]:9.1f} {m[7]:5.2f} {m[8]:8.0f}", flush=True)
    m = np.mean(rows, axis=0)
    print("-" * len(header))
    print(f"{'mean':30s} | {m[0]:9.4f} {m[1]:6.4f} | {m[2]:11.4f} {m[3]:6.4f} | {m[4]:6.1f} {m[5]:10.1f} {m[6]:9.1f} {m[7]:5.2f} {m[8]:8.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
