"""Swift Hydra: RL-guided synthesis of evasive anomalies to train a Mamba-MoE detector.

Each round:
1. the current detector is checkpointed and *published* to the env runners by the injected
   :class:`Scoring` (in-process by default; ``rlad.platform.runtime.serving.ServeScoring`` serves
   it with Ray Serve instead);
2. PPO (RLlib) trains a policy that moves beta-VAE latents of known anomalies so that decoded
   samples evade the detector while staying diverse (see ``rlad.envs.latent_synthesis_env``);
3. the trained policy rolls out deterministically from the anchors (at least ``l`` walkers,
   started near randomly drawn anchors); the ``l`` decoded samples with the highest reward
   (``selection``) join the training data as anomalies, with ``l = min(top_l,
   max_synthetic_fraction * n_train, max_synthetic_per_anomaly * n_labelled_anomalies)`` so that
   synthetic rows never swamp the labelled ones;
4. the injected :class:`Retrainer` fits a fresh detector on the combined data (in this process by
   default; ``rlad.platform.runtime.ray_train.RayTrainRetrainer`` uses Ray Train).

:meth:`SwiftHydra.rounds` yields each round's record and detector: ``run``, the detector's
``fit``, the CLI and the Tune trainable all consume it.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import ray
import torch

from rlad.algorithms.augmentation import nng_mix, smote
from rlad.algorithms.base import BaseDetector
from rlad.algorithms.beta_vae import BetaVAEConfig, ConditionalBetaVAE, train_beta_vae
from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector
from rlad.algorithms.registry import PRESETS
from rlad.algorithms.usefulness import (GradientAlignment, UsefulnessConfig, UsefulnessPool, gate, honest_validation,
                                        score_sets, split_sets, validation_auc_pr)
from rlad.envs.latent_synthesis_env import LatentSynthesisVecEnv, Scorer, SynthesisEnvConfig
from rlad.core import progress
from rlad.core.env_payload import EnvPayload, fetch_payload
from rlad.core.metrics import auc_scores
from rlad.core.ray_init import init_ray
from rlad.core.tensorboard import TBLogger

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
class RolloutConfig:
    """Where PPO samples: the runtime section (resources) of a Swift Hydra run."""

    num_env_runners: int = 1  # 0: sample in the driver
    num_envs_per_runner: int = 8  # walkers per env runner (one scorer call per vector step)
    num_cpus_per_runner: float = 1.0  # CPUs each env runner reserves (its walkers step and decode in one process)
    resources: dict[str, float] = field(default_factory=dict)  # custom resources per runner, e.g. {"rollout_node": 1}
    restart_delay_s: float = 5.0  # a crashed env runner is restarted after this delay


def large_detector_config() -> MambaMoEConfig:
    """The detector inside the generation loop: three independently trained networks of one wide
    Mamba expert each, logits averaged: better than one, about as good as five for less fit time
    (trial: ``benchmarks/results/setting_trials.csv``). The registry's ``mamba_moe`` preset is the
    one source of these values (that preset adds the floor)."""
    return MambaMoEConfig(**{**PRESETS["mamba_moe"], "floor": False})


def loop_detector_config() -> MambaMoEConfig:
    """The loop's default detector: the large detector with the default detector's unsupervised
    floor (issue 37), so that the scorer does not rank anomalies of types the labels do not show as
    normal. Chosen on development seeds 0-2 under the usefulness protocol, where it lifted unseen
    types and kept the usual split's AUC-PR within 0.01 (``benchmarks/results/sh_floor_loop.csv``)."""
    return MambaMoEConfig(**PRESETS["mamba_moe"])  # the default detector (rlad fit) itself


def inference_module_config() -> MambaMoEConfig:
    """The Inference Module: lightweight Mamba experts, their number set by data complexity. It
    fits soft targets over top-1 routing (each expert sees a share of the rows) for 10 epochs, which
    distilled better than 5 or 20, and is never early-stopped: the teacher already was, and the
    labels' validation AUC stopped the student too soon where labelled anomalies were many
    (trials: ``benchmarks/results/setting_trials.csv``). It has its own floor (issue 37): students
    distil the teacher's network probability, so without one the scorer lost what the teacher's
    floor found on unseen types (chosen on seeds 0-2: ``benchmarks/results/sh_floor_inference.csv``)."""
    return MambaMoEConfig(top_k=1, d_model=32, val_fraction=0.0, unvalidated_epochs=10, floor=True)


SYNTHESIS = ("rl", "random", "nngmix", "smote")  # the last two: no generator, no RL (rlad.algorithms.augmentation)
SELECTION = ("reward", "evasion", "random", "useful")


@dataclass
class SwiftHydraConfig:
    """Every part of the paper's loop can be switched off for ablations (``synthesis="random"``:
    the same number of candidates from uniformly random latent moves, no RL; ``env.w_div_start=0``: RL
    without the diversity term; ``retrain_generator=False``: the C-VAE is trained once;
    ``inference_module=False``: the large detector itself scores; ``synthesis="nngmix"`` or
    ``"smote"``: ``l`` rows from NNG-Mix or SMOTE, no generator, no RL).

    Usefulness (issue 28, ``rlad.algorithms.usefulness``): ``gate`` holds out an honest validation
    share of the training rows (``useful.val_share`` of the labelled anomalies and of the
    unlabelled rows) and accepts a round only when its detector's validation AUC-PR is not below
    the best so far, so the loop cannot end below its round-0 detector on validation; ``refit``
    then fits the final detector on all training rows plus the accepted pool. ``env.w_useful``
    adds the gradient-alignment proxy to PPO's reward; ``selection="useful"`` keeps the candidate
    sets whose reference usefulness (validation AUC-PR change after a short update) is positive,
    scored on ``useful.workers`` Ray actors. ``synthetic_share`` gives the synthetic rows that share
    of the anomaly class's loss mass, ``synthetic_target`` a soft target, ``refresh_pool`` a pool
    that each round replaces instead of growing."""

    RUNTIME: ClassVar[str] = "rollout"  # resources: left out of checkpoints

    rounds: int = 3
    ppo_iterations: int = 4
    top_l: int = 64
    max_synthetic_fraction: float = 0.03  # and at most this share of the training rows per round
    # ...and at most this many per labelled anomaly per round (None: no such cap). Without it, synthetic
    # rows swamped the labelled anomalies and the detector lost; 1 beat 0.5 and 2 in a trial
    # (benchmarks/results/setting_trials.csv).
    max_synthetic_per_anomaly: float | None = 1.0
    synthesis: str = "rl"  # "rl" (PPO moves the latents) or "random"
    # rank candidates by the env's reward (evasion + the round's diversity), by "evasion" alone, or pick them at
    # "random" (ablation: augmentation with random latent moves, nothing ranked)
    selection: str = "reward"
    retrain_generator: bool = True  # retrain the C-VAE each round on the combined data set
    inference_module: bool = True  # fit the Inference Module on the final combined data set; it scores
    distill: float = 0.5  # the Inference Module fits labels blended with this share of the large detector's P(anomaly)
    # Rounds >= 1: the large detector fits the real rows' labels blended with this share of the round-0 detector's
    # P(anomaly) (synthetic rows keep target 1); 0: labels alone. An unlabelled row the detector suspects then pulls
    # towards anomaly, as in the Inference Module's distillation; the anomaly class weight amplifies that pull, on
    # purpose (measured in train_mamba_moe's docstring). 0.5 won more runs against the detector alone than 0 on
    # the development seeds. The teacher stays the round-0 detector: chaining each round's detector as the next
    # one's teacher collapsed (both trials: benchmarks/results/setting_trials.csv).
    self_distill: float = 0.5
    # Loss weight of a synthetic anomaly (real rows weigh 1): 0.1 beat 0.5 with the three-network detector
    # (trial: benchmarks/results/setting_trials.csv).
    synthetic_weight: float = 0.1
    # When set: the synthetic rows' loss weights are chosen so that they carry this share of the anomaly class's
    # loss mass (labelled anomalies weigh 1 each); replaces synthetic_weight.
    synthetic_share: float | None = None
    synthetic_target: float = 1.0  # BCE target of a synthetic anomaly (soft below 1)
    refresh_pool: bool = False  # each round's accepted candidates replace the pool (default: the pool grows)
    gate: bool = False  # honest validation share held out; a round is kept only when validation AUC-PR does not fall
    refit: bool = True  # with a validation share: the final detector is refitted on all training rows + the pool
    useful: UsefulnessConfig = field(default_factory=UsefulnessConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    detector: MambaMoEConfig = field(default_factory=loop_detector_config)
    inference: MambaMoEConfig = field(default_factory=inference_module_config)
    vae: BetaVAEConfig = field(default_factory=BetaVAEConfig)
    env: SynthesisEnvConfig = field(default_factory=SynthesisEnvConfig)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.synthesis not in SYNTHESIS:
            raise ValueError(f"synthesis must be one of {SYNTHESIS}, got {self.synthesis!r}")
        for name in ("distill", "self_distill"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_synthetic_per_anomaly is not None and self.max_synthetic_per_anomaly <= 0:
            raise ValueError(f"max_synthetic_per_anomaly must be positive or None, got {self.max_synthetic_per_anomaly}")
        if self.selection not in SELECTION:
            raise ValueError(f"selection must be one of {SELECTION}, got {self.selection!r}")
        if self.synthetic_share is not None and not 0.0 < self.synthetic_share < 1.0:
            raise ValueError(f"synthetic_share must be in (0, 1) or None, got {self.synthetic_share}")
        if not 0.0 < self.synthetic_target <= 1.0:
            raise ValueError(f"synthetic_target must be in (0, 1], got {self.synthetic_target}")

    @property
    def validated(self) -> bool:
        """Whether the loop holds out an honest validation share (the gate, the usefulness reward
        or the usefulness selection needs one)."""
        return self.gate or bool(self.env.w_useful) or self.selection == "useful"


# -- injected deployment: how env runners score, how the detector is retrained ---------------------
class LocalScorer:
    """In-process scoring with the detector itself (a picklable copy goes to every env runner)."""

    def __init__(self, detector: BaseDetector) -> None:
        self.detector = detector

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.detector.anomaly_probability(X)


class Scoring(Protocol):
    """Publishes each round's detector to the env runners as a :data:`Scorer`."""

    def publish(self, detector: MambaMoEDetector, checkpoint: Path, version: int) -> Scorer: ...


class InProcessScoring:
    """Every env runner scores with its own copy of the detector."""

    def publish(self, detector: MambaMoEDetector, checkpoint: Path, version: int) -> Scorer:
        return LocalScorer(detector)


class Retrainer(Protocol):
    """Fits a fresh detector on a round's combined data, as ``MambaMoEDetector(cfg).fit(X, y,
    **fit_params)`` does (``sample_weight`` and the loss ``target`` per row)."""

    def __call__(self, cfg: MambaMoEConfig, X: np.ndarray, y: np.ndarray, workdir: Path, rnd: int,
                 **fit_params: np.ndarray | None) -> MambaMoEDetector: ...


def retrain_in_process(cfg: MambaMoEConfig, X: np.ndarray, y: np.ndarray, workdir: Path, rnd: int,
                       **fit_params: np.ndarray | None) -> MambaMoEDetector:
    return MambaMoEDetector(cfg).fit(X, y, **fit_params)


# -- RLlib pieces -----------------------------------------------------------------------------------
@dataclass
class SynthesisRound:
    """What the walkers need in a round: the detector to evade (as a scorer), the generator, the
    known anomalies' latents under it, the combined data set and the round's diversity weight."""

    scorer: Scorer
    vae: ConditionalBetaVAE
    anchors: np.ndarray
    reference: np.ndarray
    w_div: float
    usefulness: Scorer | None = None  # X -> what each row would teach the detector (env.w_useful)

    def make_env(self, num_envs: int, cfg: SynthesisEnvConfig, seed: int | None) -> LatentSynthesisVecEnv:
        """``num_envs`` walkers in this round."""
        env = LatentSynthesisVecEnv(num_envs, self.vae, self.anchors, self.reference, self.scorer, cfg, seed=seed)
        env.set_diversity_weight(self.w_div)
        env.set_usefulness(self.usefulness)
        return env

    def apply(self, env: LatentSynthesisVecEnv) -> None:
        """Move an existing env's walkers to this round."""
        env.set_scorer(self.scorer)
        env.set_generator(self.vae, self.anchors)
        env.set_reference(self.reference)
        env.set_diversity_weight(self.w_div)
        env.set_usefulness(self.usefulness)


def make_synthesis_env(env_config: dict[str, Any]) -> LatentSynthesisVecEnv:
    """RLlib env creator (VECTOR_ENTRY_POINT): RLlib adds ``num_envs`` to ``env_config``; the
    current :class:`SynthesisRound` comes from the :class:`EnvPayload` named there."""
    rnd: SynthesisRound = fetch_payload(env_config["round"])
    return rnd.make_env(env_config["num_envs"], env_config["env_cfg"], env_config.get("seed"))


class SynthesisPPO:
    """PPO on the synthesis env; CPUs reserved: ``rollout.num_env_runners * num_cpus_per_runner``
    (learner in the driver). :meth:`push` starts a round on every env runner, and on any built later (a
    restarted runner walks the current round, not the first)."""

    def __init__(self, cfg: SwiftHydraConfig, first: SynthesisRound) -> None:
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
        from ray.tune.registry import register_env

        self.round = EnvPayload(first, prefix="rlad-synthesis-round")
        register_env(ENV_NAME, make_synthesis_env)
        config = (
            PPOConfig()
            .environment(ENV_NAME, env_config={"round": self.round.name, "env_cfg": cfg.env, "seed": cfg.seed})
            .env_runners(
                num_env_runners=cfg.rollout.num_env_runners,
                num_envs_per_env_runner=cfg.rollout.num_envs_per_runner,
                num_cpus_per_env_runner=cfg.rollout.num_cpus_per_runner,
                custom_resources_per_env_runner=cfg.rollout.resources,
                gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
            )
            .learners(num_learners=0)
            .fault_tolerance(restart_failed_env_runners=True, delay_between_env_runner_restarts_s=cfg.rollout.restart_delay_s)
            .training(
                lr=cfg.ppo.lr, gamma=cfg.ppo.gamma, train_batch_size_per_learner=cfg.ppo.train_batch_size,
                minibatch_size=cfg.ppo.minibatch_size, num_epochs=cfg.ppo.num_epochs,
            )
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(cfg.ppo.hidden)))
            .debugging(seed=cfg.seed)
        )
        try:
            self.algo = config.build_algo()
        except BaseException:
            self.round.close()
            raise

    def push(self, rnd: SynthesisRound) -> None:
        """This round's detector, generator, combined data set and diversity weight: to the
        payload first (a runner restarted from now on reads it), then to every live runner."""
        self.round.put(rnd)

        def configure(runner) -> None:
            if getattr(runner, "env", None) is not None:
                rnd.apply(runner.env.unwrapped)

        self.algo.env_runner_group.foreach_env_runner(configure)

    def stop(self) -> None:
        self.algo.stop()
        self.round.close()


def rollout(env: LatentSynthesisVecEnv, policy: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One episode per walker under ``policy`` (observations -> actions); every decoded sample and
    its detector P(anomaly)."""
    obs, _ = env.reset()
    samples, proba = [], []
    for _ in range(env.cfg.episode_len):
        obs, *_ = env.step(policy(obs))
        samples.append(env.last_samples.copy())
        proba.append(env.last_proba.copy())
    return np.concatenate(samples), np.concatenate(proba)


def policy_actions(module) -> Callable[[np.ndarray], np.ndarray]:
    """The trained PPO policy, deterministic."""
    dist_cls = module.get_inference_action_dist_cls()

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        out = module.forward_inference({"obs": torch.from_numpy(obs)})
        return dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic().sample().numpy()

    return act


def random_actions(env: LatentSynthesisVecEnv, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The no-RL ablation: uniformly random moves."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, (len(obs), *env.single_action_space.shape)).astype(np.float32)


def candidate_score(selection: str, env: LatentSynthesisVecEnv, samples: np.ndarray, proba: np.ndarray,
                    seed: int) -> np.ndarray:
    """What ranks the candidates for :func:`select_top`: the env's reward, evasion alone, or a
    random draw (the ablation that adds random candidates, nothing ranked)."""
    if selection in ("reward", "useful"):  # "useful": the reward shortlists, the reference picks
        return env.reward(samples, proba)
    if selection == "evasion":
        return -proba
    return np.random.default_rng(seed).random(len(proba))


def select_top(samples: np.ndarray, score: np.ndarray, top_l: int) -> np.ndarray:
    """The ``top_l`` distinct samples with the highest ``score``."""
    _, first = np.unique(np.round(samples, 5), axis=0, return_index=True)
    order = first[np.argsort(-score[first], kind="stable")]
    return samples[order[:top_l]]


def distilled_target(y: np.ndarray, teacher: MambaMoEDetector, X: np.ndarray, share: float) -> np.ndarray | None:
    """Labels blended with a teacher, ``(1 - share) * y + share * P_teacher(anomaly | x)`` (None
    when ``share`` is 0: the labels alone): the later rounds' large detector (``self_distill``) and
    the Inference Module (``distill``) fit it. The class weight still multiplies the anomaly side of
    every target, so an unlabelled row the teacher suspects pulls the student towards anomaly: so
    distilled, the Inference Module matched the large detector, where the labels alone or that
    weight on anomalies' rows only lost (trials: ``benchmarks/results/setting_trials.csv``). The
    teacher's network probability, not its floored score (``network_probability``)."""
    if not share:
        return None
    return (1.0 - share) * y + share * teacher.network_probability(X)


# -- the loop -------------------------------------------------------------------------------------
class SwiftHydra:
    """The synthesis-retrain loop: :meth:`rounds` yields ``(record, detector)`` per round
    (round 0 = before synthesis); :meth:`run` drives it to the end."""

    def __init__(self, cfg: SwiftHydraConfig = SwiftHydraConfig(), workdir: str | Path = "runs/swift_hydra",
                 log: Callable[[str], None] = print, scoring: Scoring | None = None,
                 retrain: Retrainer = retrain_in_process) -> None:
        self.cfg, self.workdir, self.log = cfg, Path(workdir).resolve(), log
        self.scoring = scoring or InProcessScoring()
        self.retrain = retrain
        self.history: list[dict[str, Any]] = []
        self.synthetic_ = np.empty((0, 0), np.float32)
        self.generator_rows_: list[int] = []  # rows the C-VAE was trained on, per training
        self.inference_: MambaMoEDetector | None = None
        self.inference_record_: dict[str, Any] = {}

    def run(self, X: np.ndarray, y: np.ndarray, X_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None) -> MambaMoEDetector:
        for _, detector in self.rounds(X, y, X_test, y_test):
            pass
        return detector

    def rounds(self, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray | None = None,
               y_eval: np.ndarray | None = None) -> Iterator[tuple[dict[str, Any], MambaMoEDetector]]:
        """Train round by round; each record holds AUCs on ``(X_eval, y_eval)`` when given. After
        the last round, the Inference Module is fitted on the final combined data set. With a
        validation share (:attr:`SwiftHydraConfig.validated`) the rounds fit the rest of the
        training rows, and (``refit``) one more record follows: the final detector refitted on all
        of them plus the accepted pool."""
        cfg = self.cfg
        if y.sum() == 0:
            raise ValueError("Swift Hydra needs at least one labelled anomaly (y == 1) to anchor synthesis")
        X_all, y_all = X, y
        X_val = y_val = None
        if cfg.validated:
            split = honest_validation(y, cfg.useful.val_share, cfg.seed)
            if split is None:
                raise ValueError(f"the validation share ({cfg.useful.val_share}) of {int(y.sum())} labelled anomalies "
                                 "holds none: label more anomalies, raise useful.val_share, or turn gate, "
                                 "env.w_useful and selection='useful' off")
            X, y, X_val, y_val = X_all[split[0]], y_all[split[0]], X_all[split[1]], y_all[split[1]]
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        latent = cfg.synthesis in ("rl", "random")
        vae = self._train_generator(X, y) if latent else None
        anchors = vae.anomaly_anchors(X[y == 1]) if latent else np.zeros((int(y.sum()), 1), np.float32)
        if latent:
            self.log(f"[swift-hydra] beta-VAE trained on {len(X)} rows ({time.time() - t0:.1f}s)")

        detector = self.retrain(cfg.detector, X, y, self.workdir, 0)
        best_val = None if X_val is None else validation_auc_pr(detector, X_val, y_val)
        yield self._record(0, detector, X_eval, y_eval, n_synthetic=0, t=time.time() - t0,
                           **({} if best_val is None else {"val_auc_pr": best_val})), detector
        first = detector
        # the real rows' targets in every later round (None: the labels)
        real_target = distilled_target(y, first, X, cfg.self_distill)
        proxy = GradientAlignment(detector, X_val, y_val) if cfg.env.w_useful else None
        pool = None
        if cfg.selection == "useful" and cfg.useful.workers:
            pool = UsefulnessPool(cfg.useful)

        ppo = scorer = None
        if cfg.synthesis == "rl":
            scorer = self.scoring.publish(detector, detector.save(self.workdir / "round_0" / "detector.pt"), 0)
            ppo = SynthesisPPO(cfg, SynthesisRound(scorer, vae, anchors, X, cfg.env.w_div_at(1), proxy))
            self.rollout_nodes_ = set(ppo.algo.env_runner_group.foreach_env_runner(
                lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=cfg.rollout.num_env_runners == 0))
            self.log(f"[swift-hydra] {max(cfg.rollout.num_env_runners, 1)} env runner(s) on {len(self.rollout_nodes_)} node(s)")
        self.synthetic_ = np.empty((0, X.shape[1]), np.float32)
        X_aug, y_aug, w_aug = self.combined(X, y)
        top_l = min(cfg.top_l, max(1, int(cfg.max_synthetic_fraction * len(X))))  # top_l=0: no synthetic rows (ablation)
        if cfg.max_synthetic_per_anomaly is not None:
            top_l = min(top_l, max(1, int(cfg.max_synthetic_per_anomaly * y.sum())))
        walkers = max(len(anchors), top_l)  # enough candidates even with few labelled anomalies
        try:
            with TBLogger(self.workdir / "tensorboard") as tb:
                for rnd in range(1, cfg.rounds + 1):
                    w_div = cfg.env.w_div_at(rnd)
                    extra: dict[str, float] = {}
                    if latent:
                        current = SynthesisRound(scorer, vae, anchors, X_aug, w_div, proxy)  # what the env runners walk this round
                        local = dataclasses.replace(current, scorer=LocalScorer(detector)).make_env(walkers, cfg.env, seed=rnd)
                        if ppo is not None:
                            ppo.push(current)
                            for it in range(cfg.ppo_iterations):
                                result = ppo.algo.train()
                                tb.log(result, step=(rnd - 1) * cfg.ppo_iterations + it, prefix="ppo/")
                            extra["ppo_return"] = float(result.get("env_runners", {}).get("episode_return_mean", float("nan")))
                            samples, proba = rollout(local, policy_actions(ppo.algo.get_module()))
                        else:
                            samples, proba = rollout(local, random_actions(local, cfg.seed + rnd))
                        score = candidate_score(cfg.selection, local, samples, proba, cfg.seed + rnd)
                    else:  # NNG-Mix or SMOTE: top_l rows, nothing ranked
                        make = nng_mix if cfg.synthesis == "nngmix" else smote
                        samples = make(X, y, top_l if top_l else 0, np.random.default_rng(cfg.seed + rnd))
                        proba = detector.anomaly_probability(samples) if len(samples) else np.ones(1)
                        score = np.zeros(len(samples))
                    if cfg.selection == "useful" and top_l:
                        new, extra["useful_sets_kept"] = self._useful(detector, X, y, X_val, y_val, samples, score,
                                                                       top_l, pool, cfg.seed + rnd)
                    else:
                        new = select_top(samples, score, top_l) if latent else samples[:top_l]
                    before = self.synthetic_
                    self.synthetic_ = (new if cfg.refresh_pool else np.concatenate([before, new])).astype(np.float32)
                    X_aug, y_aug, w_aug = self.combined(X, y)
                    candidate = self.retrain(cfg.detector, X_aug, y_aug, self.workdir, rnd, sample_weight=w_aug,
                                             target=self.targets(real_target, y))
                    if best_val is not None:
                        extra["val_auc_pr"] = validation_auc_pr(candidate, X_val, y_val)
                        extra["accepted"] = bool(not cfg.gate or gate(best_val, extra["val_auc_pr"]))
                    if extra.get("accepted", True):
                        detector, best_val = candidate, extra.get("val_auc_pr", best_val)
                    else:  # the gate refuses the round: its pool and detector are dropped
                        self.synthetic_ = before
                        X_aug, y_aug, w_aug = self.combined(X, y)
                    if latent and cfg.retrain_generator:  # the self-reinforcing part: the generator learns from the combined data
                        vae = self._train_generator(X_aug, y_aug)
                        anchors = vae.anomaly_anchors(X[y == 1])
                    checkpoint = detector.save(self.workdir / f"round_{rnd}" / "detector.pt")
                    if ppo is not None:
                        scorer = self.scoring.publish(detector, checkpoint, rnd)
                    if proxy is not None:
                        proxy = GradientAlignment(detector, X_val, y_val)
                    rec = self._record(rnd, detector, X_eval, y_eval, n_synthetic=len(X_aug) - len(X), t=time.time() - t0,
                                       w_div=w_div, evasive_proba=float(np.mean(proba[np.argsort(proba)[:max(top_l, 1)]])), **extra)
                    tb.log(rec, step=rnd, prefix="round/")
                    yield rec, detector
        finally:
            if ppo is not None:
                ppo.stop()
            if pool is not None:
                pool.close()
        if X_val is not None and cfg.refit:
            X, y = X_all, y_all
            X_aug, y_aug, w_aug = self.combined(X, y)
            detector = self.retrain(cfg.detector, X_aug, y_aug, self.workdir, cfg.rounds + 1, sample_weight=w_aug,
                                    target=self.targets(distilled_target(y, first, X, cfg.self_distill), y))
            yield self._record(cfg.rounds + 1, detector, X_eval, y_eval, n_synthetic=len(self.synthetic_),
                               t=time.time() - t0, refit=True), detector
        if cfg.inference_module:
            start = time.time()
            teacher = first if cfg.self_distill else detector  # never a student of a student (see self_distill)
            self.inference_ = MambaMoEDetector(cfg.inference).fit(X_aug, y_aug, sample_weight=w_aug,
                                                                  target=distilled_target(y_aug, teacher, X_aug, cfg.distill))
            self.inference_record_ = {"fit_s": time.time() - start, "n_experts": self.inference_.n_experts_}
            if X_eval is not None:
                self.inference_record_.update(auc_scores(y_eval, self.inference_.decision_function(X_eval)))
            self.log("[swift-hydra] inference module " + " ".join(f"{k}={v:.4g}" for k, v in self.inference_record_.items()))

    def targets(self, real_target: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
        """The loss targets of the combined rows: the real rows' (None: their labels), then
        ``synthetic_target`` per synthetic row (None when both are plain labels)."""
        n = len(self.synthetic_)
        if real_target is None and self.cfg.synthetic_target == 1.0:
            return None
        real = np.asarray(y if real_target is None else real_target, np.float32)
        return np.r_[real, np.full(n, self.cfg.synthetic_target, np.float32)].astype(np.float32)

    def _useful(self, detector, X, y, X_val, y_val, samples, score, top_l, pool, seed) -> tuple[np.ndarray, int]:
        """The candidate sets (of ``useful.set_size``, from the ``useful.max_sets * set_size`` best
        distinct candidates by ``score``) whose reference usefulness is positive, best first, up to
        ``top_l`` rows; and how many sets were kept."""
        u = self.cfg.useful
        shortlist = select_top(samples, score, u.max_sets * u.set_size)
        sets = split_sets(np.random.default_rng(seed).permutation(shortlist), u.set_size)
        if pool is not None:
            pool.set_round(detector, X, y, X_val, y_val)
        gain = score_sets(detector, X, y, X_val, y_val, sets, u, seed, pool)
        keep = [sets[i] for i in np.argsort(-gain) if gain[i] > 0]
        rows = np.concatenate(keep)[:top_l] if keep else np.empty((0, samples.shape[1]), np.float32)
        return rows, len(keep)

    def combined(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The combined data set: training rows ``(X, y)`` then the synthetic anomalies accepted so
        far (label 1), with each row's loss weight: 1 for real rows; ``synthetic_weight`` for
        synthetic rows, or (``synthetic_share``) the weight that gives them that share of the
        anomaly class's loss mass (never exactly 1: weight 1 marks real rows)."""
        n = len(self.synthetic_)
        w = self.cfg.synthetic_weight
        if self.cfg.synthetic_share is not None and n:
            share = self.cfg.synthetic_share
            w = share / (1.0 - share) * float(y.sum()) / n
            w = np.nextafter(np.float32(1.0), np.float32(0.0)) if np.float32(w) == 1.0 else w
        return (np.concatenate([X, self.synthetic_]).astype(np.float32), np.concatenate([y, np.ones(n, dtype=y.dtype)]),
                np.concatenate([np.ones(len(y), np.float32), np.full(n, w, np.float32)]))

    def _train_generator(self, X: np.ndarray, y: np.ndarray) -> ConditionalBetaVAE:
        self.generator_rows_.append(len(X))
        return train_beta_vae(X, y, self.cfg.vae)

    def _record(self, rnd: int, detector: MambaMoEDetector, X_eval, y_eval, **extra: Any) -> dict[str, Any]:
        rec = {"round": rnd, **extra}
        if X_eval is not None:
            rec.update(auc_scores(y_eval, detector.decision_function(X_eval)))
        self.history.append(rec)
        progress.update("round", rnd, self.cfg.rounds, **{k: rec[k] for k in ("auc_roc", "auc_pr") if k in rec})
        self.log("[swift-hydra] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        return rec


class SwiftHydraDetector(BaseDetector):
    """Registry entry: ``fit`` runs the Swift Hydra loop (in-process scoring and retraining; starts
    a local Ray when none runs); the Inference Module scores (the large detector when
    ``inference_module`` is off)."""

    Config = SwiftHydraConfig
    kind = "swift_hydra"

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if y is None:
            raise ValueError("SwiftHydraDetector needs y marking labelled anomalies with 1")
        init_ray()
        with tempfile.TemporaryDirectory(prefix="swift_hydra_") as workdir:
            loop = SwiftHydra(self.config, workdir=workdir, log=lambda _: None)
            detector = loop.run(X, y)
        self.inner = self.scoring_model(loop, detector)

    @staticmethod
    def scoring_model(loop: SwiftHydra, final: MambaMoEDetector) -> MambaMoEDetector:
        """The model that scores: the Inference Module when ``inference_module`` is on, else the
        final large detector (one rule for ``fit`` and ``rlad swift-hydra``)."""
        return loop.inference_ if loop.cfg.inference_module else final

    @classmethod
    def from_loop(cls, loop: SwiftHydra, final: MambaMoEDetector, X: np.ndarray) -> "SwiftHydraDetector":
        """The detector ``fit`` would have made from this finished ``loop`` (trained on ``X``)."""
        det = cls(loop.cfg)
        det.n_features_in_ = X.shape[1]
        det.inner = cls.scoring_model(loop, final)
        det._calibrate(np.asarray(X, np.float32))
        return det

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.inner._score(X)  # the floored score where the scorer has the floor, as proba_from_scores reads it

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return self.inner.proba_from_scores(scores)

    def _get_state(self) -> dict[str, Any]:
        return self.inner._get_state()

    def _set_state(self, state: dict[str, Any]) -> None:
        self.inner = MambaMoEDetector(self.config.inference if self.config.inference_module else self.config.detector)
        self.inner.n_features_in_ = self.n_features_in_
        self.inner._set_state(state)
