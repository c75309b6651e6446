"""Swift Hydra's synthesis environment: walkers move latent vectors of a conditional beta-VAE to
make anomalies that evade the current detector.

It is a native ``gymnasium.vector.VectorEnv`` (RLlib ``gym_env_vectorize_mode=VECTOR_ENTRY_POINT``):
each step decodes all ``num_envs`` latents and scores them with ONE scorer call, so a
Serve-backed detector costs one request per vector step instead of one per walker.

- observation: ``[z, t / T, p]`` (latent, episode progress, current anomaly probability)
- action: a move in [-1, 1]^latent_dim, scaled by ``step_size``; latents stay in the prior's
  support, ``[-latent_bound, latent_bound]^d`` (N(0, I) puts 99.7% of its mass within 3)
- reward: ``w_evade * -log p(anomaly | x) + w_div * log(1 + nn(x) / s) + w_useful * u(x)``, where
  ``u`` is the usefulness published with the round (:meth:`set_usefulness`: what the sample would
  teach the detector on validation; absent, the term is 0), and ``x`` is the
  decoded anomaly (condition c = 1) and ``nn(x)`` its distance to the nearest row of the
  *combined data set* (train U the synthetic anomalies accepted so far, :meth:`set_reference`): the
  per-sample term of the Kozachenko-Leonenko entropy estimate, so the reward is the entropy a new
  sample adds to train U generated data, near zero for a copy of an accepted sample. ``s`` is the
  median nearest-neighbour distance inside the training rows. The Swift Hydra loop lowers
  ``w_div`` round by round (:meth:`set_diversity_weight`): diverse early, evasive later.
- episodes are truncated after ``episode_len`` steps; autoreset is NEXT_STEP (as RLlib expects).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

#: ``X (n, d) -> P(anomaly) (n,)``, picklable: the detector as the walkers see it.
Scorer = Callable[[np.ndarray], np.ndarray]


class ConditionalDecoder(Protocol):
    """What the env needs of the generative model (``rlad.algorithms.beta_vae.ConditionalBetaVAE``)."""

    latent_dim: int

    def eval(self) -> "ConditionalDecoder": ...

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SynthesisEnvConfig:
    episode_len: int = 10
    step_size: float = 0.3
    start_noise: float = 0.5
    w_evade: float = 1.0
    w_div_start: float = 1.0  # diversity weight of round 1 (the env's current one is its ``w_div``)
    div_decay: float = 0.7  # round r weighs diversity w_div_start * div_decay ** (r - 1)
    latent_bound: float | None = 3.0  # latents are clipped to [-b, b]; None: unbounded
    # weight of the usefulness term: what a sample would teach the detector on validation (set_usefulness; Swift
    # Hydra publishes the gradient-alignment proxy of rlad.algorithms.usefulness); 0: evasion and diversity only
    w_useful: float = 0.0
    eps: float = 1e-6

    MOVED: ClassVar[dict[str, str]] = {"w_div": "w_div_start"}  # its name in older checkpoints and configs

    def w_div_at(self, rnd: int) -> float:
        """The diversity weight of Swift Hydra round ``rnd`` (from 1): diverse early, evasive later."""
        return self.w_div_start * self.div_decay ** (rnd - 1)


def median_nn_distance(X: np.ndarray, max_rows: int = 2000, seed: int = 0) -> float:
    """Median distance from a row to its nearest other row (on a subsample)."""
    rng = np.random.default_rng(seed)
    sub = torch.from_numpy(X[rng.permutation(len(X))[:max_rows]])
    d = torch.cdist(sub, sub)
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median().clamp_min(1e-6))


class LatentSynthesisVecEnv(gym.vector.VectorEnv):
    """``num_envs`` latent walkers sharing one decoder, one scorer call per step."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, vae: ConditionalDecoder, anchors: np.ndarray, reference: np.ndarray,
                 scorer: Scorer, cfg: SynthesisEnvConfig = SynthesisEnvConfig(), seed: int | None = None) -> None:
        self.num_envs, self.scorer, self.cfg = num_envs, scorer, cfg
        self.set_generator(vae, anchors)
        self.set_reference(reference)
        self.nn_scale = median_nn_distance(reference)
        self.w_div = cfg.w_div_start  # the current weight: set_diversity_weight moves it per round
        self.usefulness: Scorer | None = None
        d = vae.latent_dim
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (d + 2,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (d,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.rng = np.random.default_rng(seed)
        self.z = torch.zeros(num_envs, d)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.done = np.zeros(num_envs, dtype=bool)
        self.last_samples = np.zeros((num_envs, reference.shape[1]), np.float32)
        self.last_proba = np.zeros(num_envs, np.float32)

    def set_scorer(self, scorer: Scorer) -> None:
        """Point the walkers at a new detector (after a retrain)."""
        self.scorer = scorer

    def set_generator(self, vae: ConditionalDecoder, anchors: np.ndarray) -> None:
        """A retrained generative model and the latents of known anomalies under it."""
        self.vae = vae.eval()
        self.anchors = self._bounded(torch.as_tensor(anchors, dtype=torch.float32))

    def set_reference(self, reference: np.ndarray) -> None:
        """The combined data set (train U accepted synthetic anomalies) novelty is measured against."""
        self.reference = torch.as_tensor(reference, dtype=torch.float32)

    def set_diversity_weight(self, w_div: float) -> None:
        self.w_div = float(w_div)

    def set_usefulness(self, usefulness: Scorer | None) -> None:
        """``X -> usefulness per row`` under the round's detector (None: no usefulness term)."""
        self.usefulness = usefulness

    def _bounded(self, z: torch.Tensor) -> torch.Tensor:
        b = self.cfg.latent_bound
        return z if b is None else z.clamp(-b, b)

    def _restart(self, mask: np.ndarray) -> None:
        n = int(mask.sum())
        start = self.anchors[torch.from_numpy(self.rng.integers(len(self.anchors), size=n))]
        noise = torch.from_numpy(self.rng.standard_normal((n, self.z.shape[1])).astype(np.float32))
        self.z[torch.from_numpy(mask)] = self._bounded(start + self.cfg.start_noise * noise)
        self.t[mask] = 0

    @torch.no_grad()
    def _decode_and_score(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.vae.decode(self.z, torch.ones(self.num_envs)).numpy()
        proba = np.asarray(self.scorer(x), dtype=np.float64)
        self.last_samples, self.last_proba = x, proba.astype(np.float32)
        return x, proba

    def _obs(self) -> np.ndarray:
        progress = (self.t / self.cfg.episode_len)[:, None]
        return np.concatenate([self.z.numpy(), progress, self.last_proba[:, None]], axis=1).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._restart(np.ones(self.num_envs, dtype=bool))
        self.done[:] = False
        self._decode_and_score()
        return self._obs(), {}

    def diversity(self, x: np.ndarray) -> np.ndarray:
        """``log(1 + nn(x) / s)``: the entropy a sample adds to the combined data set."""
        nn_dist = torch.cdist(torch.from_numpy(x), self.reference).min(1).values
        return np.log1p(nn_dist.numpy() / self.nn_scale)

    def reward(self, x: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """Evasion plus the weighted diversity (and usefulness) of decoded samples ``x`` the detector gave ``proba``."""
        rewards = self.cfg.w_evade * -np.log(np.asarray(proba, np.float64) + self.cfg.eps)
        if self.w_div:
            rewards = rewards + self.w_div * self.diversity(x)
        if self.cfg.w_useful and self.usefulness is not None:
            rewards = rewards + self.cfg.w_useful * np.asarray(self.usefulness(x), np.float64)
        return rewards

    def step(self, actions: np.ndarray):
        restarting = self.done.copy()
        moving = ~restarting
        move = torch.as_tensor(np.clip(actions, -1.0, 1.0), dtype=torch.float32) * self.cfg.step_size
        rows = torch.from_numpy(moving)
        self.z[rows] = self._bounded(self.z[rows] + move[rows])
        self.t[moving] += 1
        if restarting.any():
            self._restart(restarting)
        x, proba = self._decode_and_score()
        rewards = self.reward(x, proba)
        rewards[restarting] = 0.0
        truncated = moving & (self.t >= self.cfg.episode_len)
        self.done = truncated
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), rewards.astype(np.float32), terminated, truncated, {}
