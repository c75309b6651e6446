"""DPLAN (Pang et al., KDD 2021): deep anomaly detection by DQN from partially labelled anomalies,
on RLlib's new API stack (RLModule / Learner / EnvRunner).

* Env: :class:`rlad.envs.dplan_env.DPLANEnv` (states are rows, actions normal/anomaly, ``g_a`` /
  ``g_u`` transitions, extrinsic + iForest intrinsic reward).
* Q-network: RLlib's default DQN module configured as the paper's MLP, ``d -> 20 (ReLU) -> 2``,
  vanilla DQN (no double-Q, no dueling, 1-step, uniform replay, Huber TD loss), trained with
  DeepMind-DQN-style RMSProp. The anomaly score of a row is ``Q(s, anomaly)``.
* Hidden-layer refresh: :class:`DPLANCallback.on_episode_start` runs inside each EnvRunner right
  after an episode's reset. It reads the hidden layer ``(W, b)`` from that EnvRunner's own
  RLModule, whose weights RLlib syncs from the learner after every training step, and hands them
  to the sub-env (``DPLANEnv.set_hidden_layer``), which re-embeds all rows and refits the iForest.
  So ``g_u`` distances and intrinsic rewards follow the learner's Q-network episode by episode.
* Training loop: :class:`DPLANAlgorithm`, RLlib's DQN with a numpy transition replay and one
  learner call per rollout fragment (all of its gradient updates as minibatches), sampled from
  ``num_envs_per_env_runner`` vectorised sub-envs: still one gradient update per env step, at a
  fraction of RLlib's per-update and per-step overhead (``benchmarks/bench_dplan.py`` measures it
  against a bare-PyTorch DQN).
* Data: ``fit`` holds ``(X, y)`` in an ``EnvPayload`` (``rlad.core.env_payload``), as
  Swift Hydra holds its rounds; the env config carries only its name, and each env maps the arrays
  zero-copy from the object store.
* The env is given to RLlib as a class (no ``register_env``), so workers need no registration.
* Saving: the state holds the Q-network's four tensors; loading rebuilds a plain torch
  :class:`QNetwork` without starting Ray.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TD_ERROR_KEY,
)
from torch import nn

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.floor import FITTED_FUSIONS
from rlad.envs.dplan_env import DPLANEnv
from rlad.core import progress
from rlad.core.env_payload import EnvPayload
from rlad.core.ray_init import init_ray

#: The transition replay beside RLlib's own files in a :class:`DPLANTraining` checkpoint.
REPLAY_FILE = "replay.npz"

# Keys of the Q-network layers in the state dict of RLlib's DefaultDQNTorchRLModule built with
# fcnet_hiddens=[hidden], head_fcnet_hiddens=[] (encoder = hidden layer, af = Q head).
RLLIB_KEYS = {
    "hidden.weight": "encoder.net.mlp.0.weight",
    "hidden.bias": "encoder.net.mlp.0.bias",
    "q.weight": "af.net.mlp.0.weight",
    "q.bias": "af.net.mlp.0.bias",
}


@dataclass
class DPLANRuntime:
    """Where DPLAN samples: the runtime section (resources), left out of checkpoints."""

    num_env_runners: int = 0  # 0: sample in the driver; n: n remote EnvRunner actors
    num_cpus_per_env_runner: float = 1.0
    num_cpus: int = 2  # CPUs of the local Ray started by fit() when none is running


@dataclass
class DPLANConfig:
    """Defaults are the paper's settings; ``total steps = warmup_steps + episodes * steps_per_episode``.

    A DPLAN *episode* is the paper's: ``steps_per_episode`` env steps (all env runners and their
    sub-envs together) and one hidden-layer refresh. Each sub-env's gym episode, the steps between
    its refreshes, is that share of it (:func:`env_config`: ``refresh_every``)."""

    RUNTIME: ClassVar[str] = "runtime"
    # checkpoints saved before the runtime section held these at the top level
    MOVED: ClassVar[dict[str, str]] = {k: f"runtime.{k}" for k in ("num_env_runners", "num_cpus_per_env_runner", "num_cpus")}

    # environment
    p: float = 0.5  # probability that the next state comes from g_a (labelled anomalies)
    n_candidates: int = 1000  # size of g_u's random subsample of unlabelled rows
    iforest_estimators: int = 100  # intrinsic-reward iForest, refit every episode
    intrinsic_weight: float = 1.0  # reward = extrinsic + intrinsic_weight * intrinsic
    # "hidden": the paper's iForest in the Q-network's hidden space; "input": one iForest on the rows
    # (a space the labelled type does not shape; docs/findings.md section 6)
    intrinsic_space: str = "hidden"
    # DQN
    hidden: int = 20
    episodes: int = 10
    steps_per_episode: int = 2000
    warmup_steps: int = 10_000  # env steps sampled before the first gradient update
    replay_capacity: int = 100_000
    target_update_freq: int = 10_000  # env steps between target-network copies
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_steps: int = 10_000  # linear decay over this many env steps
    gamma: float = 0.99
    lr: float = 0.00025
    rmsprop_alpha: float = 0.95  # "gradient momentum" (squared-gradient averaging)
    rmsprop_eps: float = 0.01  # "min squared gradient"
    hidden_l2: float = 0.0  # L2 penalty on the hidden layer's weights (the reference code's; not in the paper)
    # Unsupervised floor (algorithms/floor.py, issue 37): the share of an IForest on all training rows
    # fused with Q(s, anomaly); 0: Q alone (the paper's score). 0.5 was chosen on seeds 0-2 against 0.2
    # (benchmarks/results/dplan_floor_dev.csv); fixed, as leave-one-type-out would refit DPLAN per fold.
    floor_weight: float = 0.5
    floor_fusion: str = "tail"  # "cascade" (algorithms/floor.py) found fewer unseen types for DPLAN: dplan_cascade_dev.csv
    batch_size: int = 32
    updates_per_step: float = 1.0  # gradient updates per sampled env step
    rollout_fragment_length: int = 8  # env steps per sub-env between update rounds/weight syncs
    num_envs_per_env_runner: int = 8  # vectorised sub-envs: one connector pass and forward per 8 env steps
    seed: int = 0
    runtime: DPLANRuntime = field(default_factory=DPLANRuntime)

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor_weight <= 1.0:
            raise ValueError(f"floor_weight must be in [0, 1], got {self.floor_weight}")
        if self.floor_fusion not in FITTED_FUSIONS:
            raise ValueError(f"floor_fusion must be one of {', '.join(FITTED_FUSIONS)}, got {self.floor_fusion!r}")


class QNetwork(nn.Module):
    """The paper's Q-network: one ReLU hidden layer, two Q-values (normal, anomaly)."""

    def __init__(self, n_features: int, hidden: int = 20) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_features, hidden)
        self.q = nn.Linear(hidden, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(self.embed(x))

    @classmethod
    def from_rllib(cls, weights: Mapping[str, Any]) -> "QNetwork":
        """Build from an RLlib DQN module state dict (numpy arrays or tensors)."""
        state = {ours: torch.as_tensor(np.asarray(weights[theirs])) for ours, theirs in RLLIB_KEYS.items()}
        net = cls(state["hidden.weight"].shape[1], state["hidden.weight"].shape[0])
        net.load_state_dict(state)
        return net

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """``Q(s, anomaly)`` of every row."""
        with torch.no_grad():
            return self(torch.as_tensor(X, dtype=torch.float32))[:, 1].double().numpy()


class DPLANCallback(RLlibCallback):
    """Refreshes a sub-env's hidden layer from the EnvRunner's RLModule at each episode start."""

    def on_episode_start(self, *, env: Any, env_index: int, rl_module: Any, **kwargs: Any) -> None:
        weights = rl_module.get_state(inference_only=True)
        W, b = np.asarray(weights[RLLIB_KEYS["hidden.weight"]]), np.asarray(weights[RLLIB_KEYS["hidden.bias"]])
        sub = env.envs[env_index].unwrapped
        # Sub-envs step in lockstep, so their episodes start together: the first one embeds the rows
        # and fits the iForest, the others adopt that embedding (one refit per runner, not per sub-env).
        for other in (e.unwrapped for e in env.envs):
            if other is not sub and other.has_hidden_layer(W, b):
                sub.adopt_hidden_layer(other)
                return
        sub.set_hidden_layer(W, b)


class DPLANLearner(DQNTorchLearner):
    """DQN learner with DeepMind-DQN-style RMSProp (centred, ``alpha``, ``eps``) instead of Adam."""

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        params = self.get_parameters(self.module[module_id])
        opts = self.config.learner_config_dict
        optimizer = torch.optim.RMSprop(params, alpha=opts["rmsprop_alpha"], eps=opts["rmsprop_eps"], centered=True)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """DQN's TD loss plus ``hidden_l2 * ||W_hidden||^2``, the reference implementation's L2
        penalty on the hidden layer (off by default)."""
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        l2 = self.config.learner_config_dict.get("hidden_l2", 0.0)
        if l2:
            loss = loss + l2 * self.module[module_id].encoder.net.mlp[0].weight.pow(2).sum()
        return loss


class TransitionReplay:
    """Uniform replay of one-step transitions in numpy ring buffers.

    RLlib's ``EpisodeReplayBuffer`` builds one ``SingleAgentEpisode`` per sampled transition and
    its learner connectors rebuild a batch from them: profiled on cardio, that took ~70% of a
    DPLAN training step, the gradient updates ~10%. Here a sample is a fancy index."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminateds")

    def __init__(self, capacity: int, obs_dim: int, seed: int) -> None:
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminateds = np.zeros(capacity, bool)
        self.size = self.pos = 0
        self.rng = np.random.default_rng(seed)

    def add(self, episodes: list[Any]) -> None:
        """Add every step of the sampled episode chunks (observations has one entry more)."""
        for ep in episodes:
            obs = np.asarray(ep.get_observations(), np.float32)
            terminated = np.zeros(len(ep), bool)
            terminated[-1] = ep.is_terminated
            self._put(obs[:-1], obs[1:], np.asarray(ep.get_actions()), np.asarray(ep.get_rewards()), terminated)

    def _put(self, *values: np.ndarray) -> None:
        """One array per field of :attr:`FIELDS`, in that order, written at the ring's position."""
        idx = (self.pos + np.arange(len(values[0]))) % len(self.obs)
        for field, value in zip(self.FIELDS, values, strict=True):
            getattr(self, field)[idx] = value
        self.pos = int(idx[-1] + 1) % len(self.obs)
        self.size = min(self.size + len(idx), len(self.obs))

    def save(self, path: str | os.PathLike) -> None:
        """Write the filled part of the buffer, its write position and the sampling RNG state."""
        n = self.size
        np.savez(path, capacity=len(self.obs), pos=self.pos, rng=json.dumps(self.rng.bit_generator.state),
                 **{f: getattr(self, f)[:n] for f in self.FIELDS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransitionReplay":
        with np.load(path) as z:
            replay = cls(int(z["capacity"]), z["obs"].shape[1], seed=0)
            n = len(z["obs"])
            for f in cls.FIELDS:
                getattr(replay, f)[:n] = z[f]
            replay.size, replay.pos = n, int(z["pos"])
            replay.rng.bit_generator.state = json.loads(str(z["rng"]))
        return replay

    def sample(self, n: int) -> MultiAgentBatch:
        """``n`` transitions drawn uniformly with replacement, as a 1-step DQN train batch."""
        i = self.rng.integers(self.size, size=n)
        batch = SampleBatch({
            Columns.OBS: self.obs[i], Columns.NEXT_OBS: self.next_obs[i], Columns.ACTIONS: self.actions[i],
            Columns.REWARDS: self.rewards[i], Columns.TERMINATEDS: self.terminateds[i],
            "n_step": np.ones(n, np.float32), "weights": np.ones(n, np.float32),
        })
        return MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=n)


class DPLANAlgorithm(DQN):
    """RLlib's DQN with one learner call per rollout fragment instead of one per gradient update,
    and :class:`TransitionReplay` instead of the episode replay buffer.

    Each training step samples one fragment per EnvRunner, adds its transitions to the replay,
    then draws ``n = training_intensity / batch_size * sampled steps`` minibatches in one replay
    sample and trains on them in a single ``learner_group.update(minibatch_size=batch_size)``:
    ``n`` gradient steps on ``n`` uniform replay minibatches, the replay ratio of DQN's loop.
    Each learner call (batch conversion, metrics reduce, weight sync) cost several gradient steps."""

    def training_step(self) -> None:
        cfg = self.config
        episodes, runner_results = synchronous_parallel_sample(
            worker_set=self.env_runner_group, concat=True, sample_timeout_s=cfg.sample_timeout_s,
            _uses_new_env_runners=True, _return_metrics=True,
        )
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        if not hasattr(self, "replay"):  # sized by the first rows seen: remote runners leave no local env
            obs_dim = np.asarray(episodes[0].get_observations()).shape[1]
            self.replay = TransitionReplay(cfg.replay_buffer_config["capacity"], obs_dim, cfg.seed or 0)
        self.replay.add(episodes)
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        n_updates = round(sum(len(e) for e in episodes) * cfg.training_intensity / cfg.train_batch_size_per_learner)
        if lifetime < cfg.num_steps_sampled_before_learning_starts or n_updates == 0:
            return
        results = self.learner_group.update(
            batch=self.replay.sample(n_updates * cfg.train_batch_size_per_learner),
            minibatch_size=cfg.train_batch_size_per_learner, num_epochs=1,
            timesteps={
                NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime,
                NUM_AGENT_STEPS_SAMPLED_LIFETIME: self.metrics.peek((ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME)),
            },
        )
        for res in results:  # per-row TD errors: only prioritised replay needs them; not logged
            for module_results in res.values():
                module_results.pop(TD_ERROR_KEY, None)
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, policies=[DEFAULT_MODULE_ID], inference_only=True,
        )


def dqn_config(cfg: DPLANConfig, env_config: dict[str, Any]) -> DQNConfig:
    """The RLlib ``DQNConfig`` of DPLAN (learner in the driver, ``cfg.runtime.num_env_runners`` runners),
    trained by :class:`DPLANAlgorithm`."""
    return (
        DQNConfig(algo_class=DPLANAlgorithm)
        .environment(DPLANEnv, env_config=env_config)
        .framework("torch")
        .env_runners(
            num_env_runners=cfg.runtime.num_env_runners,
            num_cpus_per_env_runner=cfg.runtime.num_cpus_per_env_runner,
            num_envs_per_env_runner=cfg.num_envs_per_env_runner,
            rollout_fragment_length=cfg.rollout_fragment_length,
        )
        .learners(
            num_learners=0,
            learner_class=DPLANLearner,
            learner_config_dict={"rmsprop_alpha": cfg.rmsprop_alpha, "rmsprop_eps": cfg.rmsprop_eps, "hidden_l2": cfg.hidden_l2},
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[cfg.hidden], fcnet_activation="relu", head_fcnet_hiddens=[]))
        .training(
            lr=cfg.lr,
            gamma=cfg.gamma,
            train_batch_size_per_learner=cfg.batch_size,
            training_intensity=cfg.updates_per_step * cfg.batch_size,  # replayed / sampled env steps
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": cfg.replay_capacity},
            num_steps_sampled_before_learning_starts=cfg.warmup_steps,
            target_network_update_freq=cfg.target_update_freq,
            epsilon=[(0, cfg.epsilon_start), (cfg.epsilon_steps, cfg.epsilon_end)],
            double_q=False,
            dueling=False,
            n_step=1,
            num_atoms=1,
            noisy=False,
        )
        .callbacks(DPLANCallback)
        .reporting(min_sample_timesteps_per_iteration=cfg.steps_per_episode)
        .debugging(seed=cfg.seed)
    )


def iteration_summary(result: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers of an RLlib DQN result worth printing."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    return {
        "env_steps": float(result.get("num_env_steps_sampled_lifetime", 0)),
        "episode_return_mean": float(runners.get("episode_return_mean", np.nan)),
        "qf_loss": float(learner.get("qf_loss", np.nan)),
        "qf_mean": float(learner.get("qf_mean", np.nan)),
    }


def env_config(cfg: DPLANConfig, data: EnvPayload) -> dict[str, Any]:
    """The env's config: env runners fetch the rows ``(X, y)`` from ``data`` by name. A sub-env
    refreshes the hidden layer every ``refresh_every`` of its steps: its share of a DPLAN episode
    (``steps_per_episode`` over every sub-env of every runner), so each DPLAN episode is one
    refresh everywhere, as the paper's one env refreshes once per episode."""
    sub_envs = cfg.num_envs_per_env_runner * max(cfg.runtime.num_env_runners, 1)
    return {
        "data": data.name, "p": cfg.p, "n_candidates": cfg.n_candidates,
        "refresh_every": max(cfg.steps_per_episode // sub_envs, 1),
        "iforest_estimators": cfg.iforest_estimators,
        "intrinsic_weight": cfg.intrinsic_weight, "intrinsic_space": cfg.intrinsic_space,
    }


class DPLANTraining:
    """One DPLAN training run on RLlib, episode by episode: ``DPLANDetector.fit``, the CLI and the
    Tune trainable all drive :meth:`episodes`. Use as a context manager (stops the algorithm).

    ``save``/``restore`` move the RLlib algorithm state and the transition replay (which RLlib
    does not checkpoint), so a restored run continues from its last finished episode with the
    transitions it had gathered."""

    def __init__(self, cfg: DPLANConfig, X: np.ndarray, y: np.ndarray) -> None:
        if not (y == 1).any() or not (y == 0).any():
            raise ValueError("DPLAN needs y with labelled anomalies (1) and unlabelled rows (0)")
        init_ray(num_cpus=cfg.runtime.num_cpus)
        self.cfg = cfg
        self.data = EnvPayload((X, y), prefix="rlad-dplan-data")
        try:
            self.algo = dqn_config(cfg, env_config(cfg, self.data)).build_algo()
        except BaseException:
            self.data.close()
            raise
        self.episode = 0
        self.env_steps = 0.0
        self.last_result: Mapping[str, Any] = {}

    def episodes(self) -> Iterator[dict[str, float]]:
        """Train to the end of each episode (after ``warmup_steps``) and yield its summary."""
        cfg = self.cfg
        while self.episode < cfg.episodes:
            while self.env_steps < cfg.warmup_steps + (self.episode + 1) * cfg.steps_per_episode:
                self.last_result = self.algo.train()
                summary = iteration_summary(self.last_result)
                self.env_steps = summary["env_steps"]
            self.episode += 1
            progress.update("episode", self.episode, cfg.episodes, episode_return=summary["episode_return_mean"])
            yield {"episode": self.episode, **summary}

    def q_network(self) -> QNetwork:
        """The learner's current Q-network as a plain torch module."""
        return QNetwork.from_rllib(self.algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID])

    def save(self, path: str | os.PathLike) -> None:
        self.algo.save_to_path(str(path))
        if hasattr(self.algo, "replay"):
            self.algo.replay.save(Path(path) / REPLAY_FILE)

    def restore(self, path: str | os.PathLike, episode: int) -> None:
        self.algo.restore_from_path(str(path))
        if (Path(path) / REPLAY_FILE).exists():
            self.algo.replay = TransitionReplay.load(Path(path) / REPLAY_FILE)
        self.episode = episode

    def close(self) -> None:
        self.algo.stop()
        self.data.close()

    def __enter__(self) -> "DPLANTraining":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DPLANDetector(BaseDetector):
    """DPLAN: ``fit(X, y)`` with ``y = 1`` for labelled anomalies and 0 for unlabelled rows.

    ``fit`` starts a local Ray with ``runtime.num_cpus`` CPUs when none is running (and leaves it running).
    Set ``on_episode(summary, training)`` to watch training; ``history_`` keeps each episode's
    summary and ``env_steps_per_s_`` the sampling throughput of the whole fit.
    """

    Config = DPLANConfig
    kind = "dplan"

    def __init__(self, config: DPLANConfig | None = None, contamination: float = 0.1, **overrides: Any) -> None:
        super().__init__(config, contamination, **overrides)
        self.q_network: QNetwork | None = None
        self.on_episode: Callable[[dict[str, float], DPLANTraining], None] | None = None
        self.history_: list[dict[str, float]] = []
        self.env_steps_per_s_: float | None = None
        self.floor_ = None

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if y is None:
            raise ValueError("DPLAN needs y with labelled anomalies (1) and unlabelled rows (0)")
        self.history_ = []
        start = time.perf_counter()
        with DPLANTraining(self.config, X, y) as training:
            for summary in training.episodes():
                self.history_.append(summary)
                if self.on_episode is not None:
                    self.on_episode(summary, training)
            self.q_network = training.q_network()
        self.env_steps_per_s_ = training.env_steps / (time.perf_counter() - start)
        self._fit_floor(X, y)

    def _fit_floor(self, X: np.ndarray, y: np.ndarray) -> None:
        self.floor_ = None
        if self.config.floor_weight > 0:
            from rlad.algorithms.floor import Floor

            self.floor_ = Floor(self.config.seed, self.config.floor_fusion).fit(X, y, self.q_network.anomaly_scores(X),
                                                                             self.config.floor_weight, None)

    def adopt_q_network(self, X: np.ndarray, y: np.ndarray, q_network: QNetwork) -> "DPLANDetector":
        """``adopt`` for a Q-network trained elsewhere (a Tune trial's episode), so a trial is
        validated on the score it would serve (the floor: :meth:`_after_adopt`)."""
        return self.adopt(X, {"q_network": dict(q_network.state_dict())}, y)

    def _after_adopt(self, X: np.ndarray, y: Any, fit_params: dict[str, np.ndarray]) -> None:
        """A Q-network trained elsewhere (its state has no floor) gets the floor ``fit`` gives it
        (``floor_weight`` > 0), fitted on ``X``, ``y`` before the one calibration; without ``y``
        it is refused rather than served without the floor."""
        if self.config.floor_weight <= 0 or self.floor_ is not None:
            return
        if y is None:
            raise ValueError("DPLANDetector.adopt needs y to fit the floor (floor_weight > 0) on a Q-network trained elsewhere")
        self._fit_floor(X, np.asarray(y).astype(np.int64).ravel())

    def _score(self, X: np.ndarray) -> np.ndarray:
        q = self.q_network.anomaly_scores(X)
        return q if self.floor_ is None else self.floor_.score(X, q)

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """With the floor, the fused score on the quantile scale (``Floor.proba``)."""
        return super().proba_from_scores(scores) if self.floor_ is None else self.floor_.proba(scores)

    def _get_state(self) -> dict[str, Any]:
        state = {"q_network": dict(self.q_network.state_dict())}
        if self.floor_ is not None:
            state.update(self.floor_.state())
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        from rlad.algorithms.floor import Floor

        self.q_network = QNetwork(self.n_features_in_, self.config.hidden)
        self.q_network.load_state_dict(state["q_network"])
        self.floor_ = Floor.from_state(state)
