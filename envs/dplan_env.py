"""DPLAN's anomaly-detection environment (Pang et al., KDD 2021), as a gymnasium env.

A state is one training row; the agent labels it normal (action 0) or anomaly (action 1).
The next state comes, with probability ``p``, from ``g_a`` (a labelled anomaly drawn uniformly)
and otherwise from ``g_u``: among ``n_candidates`` unlabelled rows drawn at random, the one
*nearest* to ``s_t`` in the Q-network's hidden space after action anomaly, the *farthest* after
action normal. The reward is the extrinsic table ``h`` below plus an intrinsic reward: the
iForest anomaly score of ``s_t`` in the hidden space, min-max scaled to [0, 1].

Both ``g_u`` and the intrinsic reward need the current Q-network's hidden layer. The env holds
no network: :meth:`DPLANEnv.set_hidden_layer` hands it the layer's weights ``(W, b)``; the env
then embeds every row once (``relu(X W^T + b)``) and refits the iForest on that embedding. In
training, ``rlad.algorithms.dplan.DPLANCallback`` calls it at every episode start.

Under RLlib the env config names an ``EnvPayload`` holding ``(X, y)``: each env fetches it once,
at construction, as zero-copy read-only views of the object store (no copy of the data per step).
"""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from sklearn.ensemble import IsolationForest

from rlad.core.env_payload import fetch_payload

NORMAL, ANOMALY = 0, 1


def extrinsic_reward(action: int, labelled_anomaly: bool) -> float:
    """``h``: +1 for 'anomaly' on a labelled anomaly, 0 for 'normal' on an unlabelled row, else -1."""
    if action == ANOMALY and labelled_anomaly:
        return 1.0
    if action == NORMAL and not labelled_anomaly:
        return 0.0
    return -1.0


class DPLANEnv(gym.Env):
    """Env config keys: ``X`` (rows) and ``y`` (1 = labelled anomaly, 0 = unlabelled), or ``data``:
    the name of an ``EnvPayload`` holding ``(X, y)`` (what RLlib's env runners get), ``p``
    (probability of ``g_a``, default 0.5), ``n_candidates`` (``g_u`` subsample, default 1000),
    ``refresh_every`` (its episode: steps between two hidden-layer refreshes, default 2000),
    ``iforest_estimators`` (default 100),
    ``intrinsic_weight`` (scale of the intrinsic reward, default 1.0), ``intrinsic_space``
    (``"hidden"``: the paper's iForest in the current hidden space, refitted each refresh;
    ``"input"``: one iForest on the rows themselves, which the labelled type does not shape)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        X, y = fetch_payload(config["data"]) if "data" in config else (config["X"], config["y"])
        self.X, y = np.asarray(X, np.float32), np.asarray(y)
        self.anomalies = np.flatnonzero(y == 1)
        self.unlabelled = np.flatnonzero(y == 0)
        if self.anomalies.size == 0 or self.unlabelled.size == 0:
            raise ValueError("DPLANEnv needs both labelled anomalies (y=1) and unlabelled rows (y=0)")
        self.is_anomaly = y == 1
        self.p = float(config.get("p", 0.5))
        self.n_candidates = min(int(config.get("n_candidates", 1000)), self.unlabelled.size)
        # "steps_per_episode": the key's name in RLlib configs saved in older DPLAN checkpoints
        self.refresh_every = int(config.get("refresh_every", config.get("steps_per_episode", 2000)))
        self.iforest_estimators = int(config.get("iforest_estimators", 100))
        self.intrinsic_weight = float(config.get("intrinsic_weight", 1.0))
        self.intrinsic_space = str(config.get("intrinsic_space", "hidden"))
        if self.intrinsic_space not in ("hidden", "input"):
            raise ValueError(f"intrinsic_space must be 'hidden' or 'input', got {self.intrinsic_space!r}")

        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.X.shape[1],), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.layer: tuple[np.ndarray, np.ndarray] | None = None  # (W, b) of the current embedding
        self.hidden: np.ndarray | None = None  # rows embedded by the current hidden layer
        self.intrinsic: np.ndarray | None = None  # iForest score per row, in [0, 1]
        self.num_refreshes = 0
        self.state = 0
        self.t = 0

    def set_hidden_layer(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Embed all rows with ``relu(X W^T + b)`` and refit the iForest there (intrinsic reward;
        with ``intrinsic_space="input"`` the iForest is fitted once, on the rows)."""
        self.layer = (np.array(weight, np.float32), np.array(bias, np.float32))
        self.hidden = np.maximum(self.X @ self.layer[0].T + self.layer[1], 0.0)
        self.num_refreshes += 1
        if self.intrinsic_space == "input" and self.intrinsic is not None:
            return
        seed = int(self.np_random.integers(2**31 - 1))
        space = self.X if self.intrinsic_space == "input" else self.hidden
        forest = IsolationForest(n_estimators=self.iforest_estimators, random_state=seed).fit(space)
        score = -forest.score_samples(space)  # higher = more anomalous
        span = score.max() - score.min()
        self.intrinsic = ((score - score.min()) / span if span > 0 else np.zeros_like(score)).astype(np.float32)

    def has_hidden_layer(self, weight: np.ndarray, bias: np.ndarray) -> bool:
        """Whether the current embedding comes from exactly this layer."""
        return self.layer is not None and np.array_equal(self.layer[0], weight) and np.array_equal(self.layer[1], bias)

    def adopt_hidden_layer(self, other: "DPLANEnv") -> None:
        """Share another env's embedding and intrinsic rewards (same rows, same layer): no refit."""
        self.layer, self.hidden, self.intrinsic = other.layer, other.hidden, other.intrinsic
        self.num_refreshes += 1

    def g_a(self) -> int:
        """A labelled anomaly, uniformly."""
        return int(self.np_random.choice(self.anomalies))

    def g_u(self, action: int, s_t: int) -> int:
        """Of ``n_candidates`` random unlabelled rows, the nearest to ``s_t`` in hidden space after
        action anomaly, the farthest after action normal. ``s_t`` itself is never its own nearest
        neighbour (it would make the agent stay put)."""
        candidates = self.np_random.choice(self.unlabelled, size=self.n_candidates, replace=False)
        dist = np.linalg.norm(self.hidden[candidates] - self.hidden[s_t], axis=1)
        if action == NORMAL:
            return int(candidates[np.argmax(dist)])
        dist[candidates == s_t] = np.inf
        return int(candidates[np.argmin(dist)])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.state = int(self.np_random.choice(self.unlabelled))
        return self.X[self.state].copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.hidden is None:
            raise RuntimeError("call set_hidden_layer() before stepping (DPLANCallback does it each episode)")
        action = int(action)
        s_t = self.state
        r_e = extrinsic_reward(action, bool(self.is_anomaly[s_t]))
        r_i = self.intrinsic_weight * float(self.intrinsic[s_t])
        self.state = self.g_a() if self.np_random.random() < self.p else self.g_u(action, s_t)
        self.t += 1
        info = {"extrinsic_reward": r_e, "intrinsic_reward": r_i}
        return self.X[self.state].copy(), r_e + r_i, False, self.t >= self.refresh_every, info
