"""Fault tolerance of RLlib training: an env runner killed mid-training is restarted, walks
the current round and training finishes. (Serve replica loss: tests/test_http_api.py; checkpoint corruption:
tests/test_mamba_moe.py and test_checkpoint.py.)"""
from __future__ import annotations

import os
import pickle
import signal
import time


from conftest import small_split
from rlad.algorithms.beta_vae import BetaVAEConfig, train_beta_vae
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.algorithms.swift_hydra import (
    LocalScorer, PPOSettings, RolloutConfig, SwiftHydraConfig, SynthesisPPO, SynthesisRound,
)


def test_killed_env_runner_is_restarted_and_training_finishes(ray_cluster):
    split = small_split("thyroid", max_rows=800, la=0.3)
    det = MambaMoEDetector(epochs=1).fit(split.X_train, split.y_train_semi)
    vae = train_beta_vae(split.X_train, split.y_train_semi, BetaVAEConfig(epochs=3))
    anchors = vae.anomaly_anchors(split.X_train[split.y_train_semi == 1])
    cfg = SwiftHydraConfig(rollout=RolloutConfig(num_env_runners=2, num_envs_per_runner=4, restart_delay_s=1.0),
                           ppo=PPOSettings(train_batch_size=160, minibatch_size=80, num_epochs=1))
    ppo = SynthesisPPO(cfg, SynthesisRound(LocalScorer(det), vae, anchors, split.X_train, w_div=1.0))
    algo = ppo.algo
    # the round's payload (detector, generator, data) stays out of the config every runner is built from
    assert len(pickle.dumps(algo.config)) < 100_000
    try:
        algo.train()
        ppo.push(SynthesisRound(LocalScorer(det), vae, anchors, split.X_train[:500], w_div=0.125))  # round 2
        pids = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        results = [algo.train() for _ in range(4)]
        deadline = time.time() + 120
        while algo.env_runner_group.num_healthy_remote_workers() < 2:
            assert time.time() < deadline, "env runner was not restarted"
            algo.train()
        new_pids = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)
        assert pids[0] not in new_pids and len(new_pids) == 2
        assert results[-1]["env_runners"]["num_env_steps_sampled"] > 0
        walking = algo.env_runner_group.foreach_env_runner(
            lambda r: (r.env.unwrapped.w_div, len(r.env.unwrapped.reference)), local_env_runner=False)
        assert walking == [(0.125, 500)] * 2  # the restarted runner walks round 2, not round 1
    finally:
        ppo.stop()
