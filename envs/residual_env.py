"""Classification of residual-map features as a gymnasium environment (Lee et al., 2022).

Each step shows one training sample's residual features; the agent answers 0 (normal) or
1 (anomalous) and earns +1 when right, -1 when wrong, both scaled by ``anomaly_weight`` on
anomalies. Samples are drawn class-balanced: an anomaly with probability ``anomaly_fraction``,
else a normal row, so that rare labelled anomalies are seen as often as the policy needs.
An episode is ``episode_length`` independent decisions.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ResidualEnv(gym.Env):
    """env_config: ``features`` (n, d) float32, ``labels`` (n,) 0/1 with both classes present,
    optional ``episode_length`` (64), ``anomaly_fraction`` (0.5), ``anomaly_weight`` (1.0)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.features = np.asarray(config["features"], dtype=np.float32)
        labels = np.asarray(config["labels"]).astype(np.int64)
        self.normal_idx = np.flatnonzero(labels == 0)
        self.anomaly_idx = np.flatnonzero(labels == 1)
        if len(self.normal_idx) == 0 or len(self.anomaly_idx) == 0:
            raise ValueError("ResidualEnv needs both normal (0) and anomalous (1) samples")
        self.labels = labels
        self.episode_length = int(config.get("episode_length", 64))
        self.anomaly_fraction = float(config.get("anomaly_fraction", 0.5))
        self.anomaly_weight = float(config.get("anomaly_weight", 1.0))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.features.shape[1],), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0
        self._current = 0

    def _draw(self) -> np.ndarray:
        pool = self.anomaly_idx if self.np_random.random() < self.anomaly_fraction else self.normal_idx
        self._current = int(self.np_random.choice(pool))
        return self.features[self._current]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        label = self.labels[self._current]
        reward = (1.0 if int(action) == label else -1.0) * (self.anomaly_weight if label == 1 else 1.0)
        self._t += 1
        return self._draw(), reward, self._t >= self.episode_length, False, {"label": int(label)}
