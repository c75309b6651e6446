"""Swift Hydra: RL-guided synthesis of evasive anomalies to train a Mamba-MoE detector.

Each round:
1. the current detector is checkpointed and served (Ray Serve, or in-process);
2. PPO (RLlib) trains a policy that moves beta-VAE latents of known anomalies so that decoded
   samples evade the detector while staying diverse (see ``rlad.envs.latent_synthesis_env``);
3. the trained policy rolls out deterministically from the anchors (at least ``l`` walkers,
   started near randomly drawn anchors); the ``l`` most evasive decoded samples (lowest detector
   P(anomaly)) join the training data as anomalies, with ``l = min(top_l,
   max_synthetic_fraction * n_train)`` so that synthetic rows never swamp a small data set, and the
   augmented data is written to Parquet;
4. the detector is retrained on the augmented data (in-process, or by Ray Train).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import ray
import torch

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.beta_vae import BetaVAEConfig, ConditionalBetaVAE, train_beta_vae
from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector
from rlad.envs.latent_synthesis_env import LatentSynthesisVecEnv, SynthesisEnvConfig
from rlad.platform.data import load_dataset, write_parquet
from rlad.platform.metrics import auc_scores
from rlad.platform.serving import LocalScorer, ServeOptions, ServeScorer, deploy_detector
from rlad.platform.tensorboard import TBLogger

ENV_NAME = "rlad-latent-synthesis"


@dataclass
class PPOSettings:
    lr: float = 3e-4
    train_batch_size: int = 400
    minibatch_size: int = 100
    num_epochs: int = 4
    gamma: float = 0.9
    hidden: tuple[int, ...] = (64, 64)


@dataclass
class SwiftHydraConfig:
    rounds: int = 3
    ppo_iterations: int = 4
    top_l: int = 64
    max_synthetic_fraction: float = 0.03  # and at most this share of the training rows per round
    num_env_runners: int = 1
    num_envs_per_runner: int = 8
    use_serve: bool = True
    serve_num_cpus: float = 0.5
    serve_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"detector_node": 1}
    rollout_resources: dict[str, float] = field(default_factory=dict)  # per env runner, e.g. {"rollout_node": 1}
    env_runner_restart_delay_s: float = 5.0  # a crashed env runner is restarted after this delay
    ray_train: bool = False  # retrain with Ray Train (TorchTrainer) instead of in this process
    train_workers: int = 1
    train_cpus_per_worker: float = 0.5
    detector: MambaMoEConfig = field(default_factory=MambaMoEConfig)
    vae: BetaVAEConfig = field(default_factory=BetaVAEConfig)
    env: SynthesisEnvConfig = field(default_factory=SynthesisEnvConfig)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    seed: int = 0


def make_synthesis_env(env_config: dict[str, Any]) -> LatentSynthesisVecEnv:
    """RLlib env creator (VECTOR_ENTRY_POINT): RLlib adds ``num_envs`` to ``env_config``."""
    return LatentSynthesisVecEnv(
        num_envs=env_config["num_envs"], vae=env_config["vae"], anchors=env_config["anchors"],
        reference=env_config["reference"], scorer=env_config["scorer"], cfg=env_config["env_cfg"],
        seed=env_config.get("seed"),
    )


def build_ppo(cfg: SwiftHydraConfig, env_config: dict[str, Any]):
    """PPO on the synthesis env; CPUs reserved: ``num_env_runners`` (learner runs in the driver)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_synthesis_env)
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=cfg.num_env_runners,
            num_envs_per_env_runner=cfg.num_envs_per_runner,
            num_cpus_per_env_runner=1,
            custom_resources_per_env_runner=cfg.rollout_resources,
            gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
        )
        .learners(num_learners=0)
        .fault_tolerance(restart_failed_env_runners=True, delay_between_env_runner_restarts_s=cfg.env_runner_restart_delay_s)
        .training(
            lr=cfg.ppo.lr, gamma=cfg.ppo.gamma, train_batch_size_per_learner=cfg.ppo.train_batch_size,
            minibatch_size=cfg.ppo.minibatch_size, num_epochs=cfg.ppo.num_epochs,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(cfg.ppo.hidden)))
        .debugging(seed=cfg.seed)
    )
    return config.build_algo()


@torch.no_grad()
def synthesize(module, env: LatentSynthesisVecEnv) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic rollout of one episode per walker; returns every decoded sample and its
    detector P(anomaly)."""
    dist_cls = module.get_inference_action_dist_cls()
    obs, _ = env.reset()
    samples, proba = [], []
    for _ in range(env.cfg.episode_len):
        out = module.forward_inference({"obs": torch.from_numpy(obs)})
        action = dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic().sample().numpy()
        obs, *_ = env.step(action)
        samples.append(env.last_samples.copy())
        proba.append(env.last_proba.copy())
    return np.concatenate(samples), np.concatenate(proba)


def select_evasive(samples: np.ndarray, proba: np.ndarray, top_l: int) -> np.ndarray:
    """The ``top_l`` distinct samples with the lowest anomaly probability."""
    _, first = np.unique(np.round(samples, 5), axis=0, return_index=True)
    order = first[np.argsort(proba[first], kind="stable")]
    return samples[order[:top_l]]


class SwiftHydra:
    """The synthesis-retrain loop; ``run`` returns the final detector and per-round history."""

    def __init__(self, cfg: SwiftHydraConfig = SwiftHydraConfig(), workdir: str | Path = "runs/swift_hydra",
                 log: Callable[[str], None] = print,
                 on_round: Callable[[int, dict[str, Any], MambaMoEDetector], None] | None = None) -> None:
        """``on_round(round, record, detector)`` is called after every round (0 = before synthesis)."""
        self.cfg, self.workdir, self.log, self.on_round = cfg, Path(workdir).resolve(), log, on_round
        self.history: list[dict[str, Any]] = []

    def retrain(self, parquet: Path, rnd: int) -> MambaMoEDetector:
        """A fresh detector fitted on the rows of ``parquet``: by Ray Train or in this process."""
        if self.cfg.ray_train:
            from rlad.platform.train_detector import RayTrainOptions, retrain_with_ray_train

            options = RayTrainOptions(num_workers=self.cfg.train_workers, cpus_per_worker=self.cfg.train_cpus_per_worker,
                                      storage_path=str(self.workdir / "ray_train"))
            return retrain_with_ray_train(parquet, self.cfg.detector, options, name=f"round_{rnd}")
        ds = load_dataset(parquet)
        return MambaMoEDetector(self.cfg.detector).fit(ds.X, ds.y)

    def _scorer(self, detector: MambaMoEDetector, checkpoint: Path, version: int):
        if not self.cfg.use_serve:
            return LocalScorer(detector)
        options = ServeOptions(app_name="swift-hydra-detector", num_cpus=self.cfg.serve_num_cpus,
                               resources=self.cfg.serve_resources)
        deploy_detector(str(checkpoint), options, version=version)
        return ServeScorer(options.app_name)

    def run(self, X: np.ndarray, y: np.ndarray, X_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None) -> MambaMoEDetector:
        cfg = self.cfg
        if y.sum() == 0:
            raise ValueError("Swift Hydra needs at least one labelled anomaly (y == 1) to anchor synthesis")
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        vae = train_beta_vae(X, y, cfg.vae)
        anchors = vae.anomaly_anchors(X[y == 1])
        self.log(f"[swift-hydra] beta-VAE trained on {len(X)} rows ({time.time() - t0:.1f}s)")

        parquet = write_parquet(self.workdir / "round_0" / "train.parquet", X, y)
        detector = self.retrain(parquet, 0)
        self._record(0, detector, X_test, y_test, n_synthetic=0, t=time.time() - t0)

        checkpoint = detector.save(self.workdir / "round_0" / "detector.pt")
        env_config = {"vae": vae, "anchors": anchors, "reference": X, "env_cfg": cfg.env, "seed": cfg.seed,
                      "scorer": self._scorer(detector, checkpoint, version=0)}
        algo = build_ppo(cfg, env_config)
        self.rollout_nodes_ = set(algo.env_runner_group.foreach_env_runner(
            lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=cfg.num_env_runners == 0))
        self.log(f"[swift-hydra] {max(cfg.num_env_runners, 1)} env runner(s) on {len(self.rollout_nodes_)} node(s)")
        X_aug, y_aug = X, y
        top_l = min(cfg.top_l, max(1, int(cfg.max_synthetic_fraction * len(X))))
        walkers = max(len(anchors), top_l)  # enough candidates even with few labelled anomalies
        try:
            with TBLogger(self.workdir / "tensorboard") as tb:
                for rnd in range(1, cfg.rounds + 1):
                    for it in range(cfg.ppo_iterations):
                        result = algo.train()
                        tb.log(result, step=(rnd - 1) * cfg.ppo_iterations + it, prefix="ppo/")
                    ret = result.get("env_runners", {}).get("episode_return_mean", float("nan"))
                    local = LatentSynthesisVecEnv(walkers, vae, anchors, X_aug, LocalScorer(detector), cfg.env, seed=rnd)
                    samples, proba = synthesize(algo.get_module(), local)
                    new = select_evasive(samples, proba, top_l)
                    X_aug = np.concatenate([X_aug, new]).astype(np.float32)
                    y_aug = np.concatenate([y_aug, np.ones(len(new), dtype=y.dtype)])
                    parquet = write_parquet(self.workdir / f"round_{rnd}" / "train.parquet", X_aug, y_aug)
                    detector = self.retrain(parquet, rnd)
                    checkpoint = detector.save(self.workdir / f"round_{rnd}" / "detector.pt")
                    self._update_scorer(algo, detector, checkpoint, rnd)
                    rec = self._record(rnd, detector, X_test, y_test, n_synthetic=len(X_aug) - len(X), t=time.time() - t0,
                                       ppo_return=float(ret), evasive_proba=float(np.mean(proba[np.argsort(proba)[:top_l]])))
                    tb.log(rec, step=rnd, prefix="round/")
        finally:
            algo.stop()
        self.synthetic_ = X_aug[len(X):]
        return detector

    def _update_scorer(self, algo, detector: MambaMoEDetector, checkpoint: Path, version: int) -> None:
        """Serve: hot-swap the deployment's weights. In-process: push the detector to the runners."""
        if self.cfg.use_serve:
            self._scorer(detector, checkpoint, version)
            return
        scorer = LocalScorer(detector)

        def swap(runner) -> None:
            if getattr(runner, "env", None) is not None:
                runner.env.unwrapped.set_scorer(scorer)

        algo.env_runner_group.foreach_env_runner(swap)

    def _record(self, rnd: int, detector: MambaMoEDetector, X_test, y_test, **extra: Any) -> dict[str, Any]:
        rec = {"round": rnd, **extra}
        if X_test is not None:
            rec.update(auc_scores(y_test, detector.decision_function(X_test)))
        self.history.append(rec)
        if self.on_round is not None:
            self.on_round(rnd, rec, detector)
        self.log("[swift-hydra] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        return rec


class SwiftHydraDetector(BaseDetector):
    """Registry entry: ``fit`` runs the Swift Hydra loop (needs Ray), scoring uses its final
    Mamba-MoE detector."""

    Config = SwiftHydraConfig
    kind = "swift_hydra"

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        import tempfile

        from rlad.platform.ray_runtime import init_ray

        if y is None:
            raise ValueError("SwiftHydraDetector needs y marking labelled anomalies with 1")
        init_ray()
        with tempfile.TemporaryDirectory(prefix="swift_hydra_") as workdir:
            self.inner = SwiftHydra(self.config, workdir=workdir, log=lambda _: None).run(X, y)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.inner.logits(X)

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return self.inner.proba_from_scores(scores)

    def _get_state(self) -> dict[str, Any]:
        return self.inner._get_state()

    def _set_state(self, state: dict[str, Any]) -> None:
        self.inner = MambaMoEDetector(self.config.detector)
        self.inner.n_features_in_ = self.n_features_in_
        self.inner._set_state(state)
