"""RL classifier of autoencoder residual maps (Lee, Kim & Kang, "Semi-supervised Anomaly
Detection with Reinforcement Learning", ITC-CSCC 2022).

1. A convolutional autoencoder (AE) learns to reconstruct normal images (rows with y == 0).
2. Residual map ``r = |x - AE(x)|``. The agent observes a compact summary of it: the channel-mean
   map average-pooled to a ``grid_size`` x ``grid_size`` grid, plus four statistics of the
   full map (mean, std, max, L2 norm), standardised on the normal training rows (one shared
   mean/std for all grid cells, one per statistic).
3. An RLlib PPO agent (new API stack) plays :class:`rlad.envs.residual_env.ResidualEnv`: it labels
   each shown sample 0 (normal) or 1 (anomalous), +1 if right, -1 if wrong (anomalies weighted by
   ``anomaly_weight``), with class-balanced sampling of the labelled anomalies (y == 1).
4. Score = the policy's log-odds of "anomalous", ``logit[1] - logit[0]`` (monotone in its
   probability, without saturating at 1.0, so rankings stay informative).

Without labelled anomalies the agent trains on pseudo-anomalies: normal images with one random
rectangle replaced by uniform noise. The trained policy network is a plain torch MLP
(:func:`mlp`); its weights are saved with the AE's, and loading rebuilds both without Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rlad.algorithms.base import BaseDetector, check_array
from rlad.algorithms.torch_utils import mlp
from rlad.envs.residual_env import ResidualEnv
from rlad.core.ray_init import init_ray
from rlad.core.tensorboard import TBLogger

N_STATS = 4  # mean, std, max, L2 norm of the residual map


@dataclass
class ResidualRLRuntime:
    """Where and how loudly it runs: the runtime section, left out of checkpoints."""

    num_cpus: int = 2  # CPUs of the local Ray started by fit() when none is running
    verbose: bool = False
    logdir: str | None = None  # TensorBoard folder for PPO results


@dataclass
class ResidualRLConfig:
    RUNTIME: ClassVar[str] = "runtime"
    # checkpoints saved before the runtime section held these at the top level
    MOVED: ClassVar[dict[str, str]] = {k: f"runtime.{k}" for k in ("num_cpus", "verbose", "logdir")}

    # (C, H, W) of the flattened rows; None: set at fit, (1, s, s) if n_features = s*s else (1, 1, n_features)
    image_shape: tuple[int, int, int] | None = None
    # convolutional autoencoder
    base_channels: int = 16
    latent_dim: int = 32
    ae_epochs: int = 100
    ae_batch_size: int = 32
    ae_lr: float = 1e-3
    # observation: residual map pooled to grid_size x grid_size, plus N_STATS statistics
    grid_size: int = 8
    # PPO policy
    hidden: tuple[int, ...] = (64, 64)
    iterations: int = 15
    train_batch_size: int = 1024
    minibatch_size: int = 128
    num_epochs: int = 5
    lr: float = 1e-3
    gamma: float = 0.0  # decisions are independent: nothing to discount
    entropy_coeff: float = 0.0
    # environment
    episode_length: int = 64
    anomaly_fraction: float = 0.5
    anomaly_weight: float = 1.0
    seed: int = 0
    runtime: ResidualRLRuntime = field(default_factory=ResidualRLRuntime)


class ResidualPolicyModule(TorchRLModule, ValueFunctionAPI):
    """Separate policy and value MLPs over the residual features (model_config: ``hidden``)."""

    def setup(self) -> None:
        hidden = tuple(self.model_config["hidden"])
        obs_dim = self.observation_space.shape[0]
        self.pi = mlp([obs_dim, *hidden, self.action_space.n], act=nn.Tanh)
        self.vf = mlp([obs_dim, *hidden, 1], act=nn.Tanh)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.vf(batch[Columns.OBS]).squeeze(-1)


class ConvAutoencoder(nn.Module):
    """Stride-2 conv encoder down to about 4x4, dense bottleneck, upsample+conv decoder."""

    def __init__(self, image_shape: tuple[int, int, int], base_channels: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = image_shape
        n_down = min(4, max(1, (min(h, w) // 4).bit_length() - 1))
        chans = [min(base_channels * 2**i, 128) for i in range(n_down)]
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        for i, ch in enumerate(chans):
            enc += [nn.Conv2d(c if i == 0 else chans[i - 1], ch, 3, stride=2, padding=1), nn.ReLU()]
        for i in reversed(range(n_down)):
            out = chans[i - 1] if i > 0 else c
            dec += [nn.Upsample(scale_factor=2.0), nn.Conv2d(chans[i], out, 3, padding=1)]
            dec += [nn.ReLU()] if i > 0 else []
        self.encoder = nn.Sequential(*enc)
        with torch.no_grad():
            self.code_shape = self.encoder(torch.zeros(1, c, h, w)).shape[1:]
        code_dim = int(np.prod(self.code_shape))
        self.to_latent = nn.Linear(code_dim, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, code_dim), nn.ReLU())
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_latent(self.encoder(x).flatten(1))
        out = self.decoder(self.from_latent(z).view(-1, *self.code_shape))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def residual_features(residual: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(n, C, H, W) residual maps -> (n, g*g + N_STATS) pooled grid and summary statistics."""
    g = min(grid_size, *residual.shape[-2:])
    grid = F.adaptive_avg_pool2d(residual.mean(1, keepdim=True), g).flatten(1)
    flat = residual.flatten(1)
    stats = torch.stack([flat.mean(1), flat.std(1), flat.amax(1), flat.norm(dim=1)], dim=1)
    return torch.cat([grid, stats], dim=1)


def feature_normalizer(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of normal features. The grid cells share one mean/std: per-cell statistics
    would blow up cells that are nearly constant on normal images (e.g. empty borders), making
    tiny residual changes there look like huge anomalies."""
    k = feats.shape[1] - N_STATS
    mean, std = feats.mean(0), feats.std(0, correction=0)
    mean[:k], std[:k] = feats[:, :k].mean(), feats[:, :k].std(correction=0)
    return mean, std.clamp_min(1e-6)


def pseudo_anomalies(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` copies of random normal images (n, C, H, W), each with one noise rectangle."""
    out = images[rng.integers(len(images), size=n)].copy()
    _, c, h, w = out.shape
    for img in out:
        ph = rng.integers(max(1, h // 8), max(1, h // 2) + 1)
        pw = rng.integers(max(1, w // 8), max(1, w // 2) + 1)
        top, left = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        img[:, top : top + ph, left : left + pw] = rng.random((c, ph, pw), dtype=np.float32)
    return out


class ResidualRLDetector(BaseDetector):
    """Autoencoder residual maps classified by a PPO policy; score = log-odds of "anomalous"."""

    Config = ResidualRLConfig
    kind = "residual_rl"

    def __init__(self, config: ResidualRLConfig | None = None, contamination: float = 0.1, **overrides: Any) -> None:
        super().__init__(config, contamination, **overrides)
        if self.config.image_shape is not None:
            self.config.image_shape = tuple(int(s) for s in self.config.image_shape)
        self.config.hidden = tuple(int(h) for h in self.config.hidden)
        self.ae: ConvAutoencoder | None = None
        self.policy: nn.Sequential | None = None
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []

    # -- networks -------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        self.ae = ConvAutoencoder(cfg.image_shape, cfg.base_channels, cfg.latent_dim)
        g = min(cfg.grid_size, *cfg.image_shape[1:])
        self.policy = mlp([g * g + N_STATS, *cfg.hidden, 2], act=nn.Tanh)  # the same net as in RLlib training

    def _images(self, X: np.ndarray) -> np.ndarray:
        shape = self.config.image_shape
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(f"rows have {X.shape[1]} features, image_shape {shape} needs {int(np.prod(shape))}")
        return X.reshape(len(X), *shape)

    @torch.no_grad()
    def _residuals(self, images: np.ndarray, batch: int = 256) -> torch.Tensor:
        """|x - AE(x)| for (n, C, H, W) images."""
        self.ae.eval()
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return torch.cat([(xb - self.ae(xb)).abs() for xb in x.split(batch)])

    def _features(self, images: np.ndarray) -> torch.Tensor:
        feats = residual_features(self._residuals(images), self.config.grid_size)
        return (feats - self.feature_mean) / self.feature_std

    def residual_norms(self, X: Any) -> np.ndarray:
        """L2 norm of each row's residual map: the fixed-threshold baseline's score."""
        self._check_fitted()
        return self._residuals(self._images(check_array(X, self.n_features_in_))).flatten(1).norm(dim=1).numpy()

    # -- training -------------------------------------------------------------------------------
    def _train_autoencoder(self, normal: np.ndarray) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.from_numpy(np.ascontiguousarray(normal))
        opt = torch.optim.Adam(self.ae.parameters(), lr=cfg.ae_lr)
        self.ae.train()
        for epoch in range(cfg.ae_epochs):
            total = 0.0
            for idx in torch.randperm(len(x), generator=gen).split(cfg.ae_batch_size):
                loss = F.mse_loss(self.ae(x[idx]), x[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            if cfg.runtime.verbose and (epoch + 1) % max(1, cfg.ae_epochs // 5) == 0:
                print(f"[residual_rl] AE epoch {epoch + 1}/{cfg.ae_epochs} mse={total / len(x):.5f}", flush=True)

    def _train_policy(self, features: np.ndarray, labels: np.ndarray) -> None:
        cfg = self.config
        init_ray(num_cpus=cfg.runtime.num_cpus)
        ppo = (
            PPOConfig()
            .environment(
                ResidualEnv,
                env_config={
                    "features": features,
                    "labels": labels,
                    "episode_length": cfg.episode_length,
                    "anomaly_fraction": cfg.anomaly_fraction,
                    "anomaly_weight": cfg.anomaly_weight,
                },
            )
            .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
            .learners(num_learners=0)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=ResidualPolicyModule, model_config={"hidden": list(cfg.hidden)}))
            .training(
                lr=cfg.lr,
                gamma=cfg.gamma,
                train_batch_size_per_learner=cfg.train_batch_size,
                minibatch_size=cfg.minibatch_size,
                num_epochs=cfg.num_epochs,
                entropy_coeff=cfg.entropy_coeff,
            )
            .debugging(seed=cfg.seed)
        )
        algo = ppo.build_algo()
        self.history = []
        logger = TBLogger(cfg.runtime.logdir) if cfg.runtime.logdir else None
        try:
            for it in range(1, cfg.iterations + 1):
                result = algo.train()
                ret = result["env_runners"]["episode_return_mean"]
                self.history.append({"iteration": it, "episode_return_mean": float(ret)})
                if logger:
                    logger.log(result, it, prefix="ppo/")
                if cfg.runtime.verbose:
                    print(f"[residual_rl] PPO iter {it}/{cfg.iterations} return/step={ret / cfg.episode_length:+.3f}", flush=True)
            trained = algo.get_module().pi
            self.policy.load_state_dict({k: v.detach().cpu().clone() for k, v in trained.state_dict().items()})
        finally:
            algo.stop()
            if logger:
                logger.close()

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cfg = self.config
        if cfg.image_shape is None:
            side = int(round(np.sqrt(X.shape[1])))
            cfg.image_shape = (1, side, side) if side * side == X.shape[1] else (1, 1, X.shape[1])
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        images = self._images(X)
        y = np.zeros(len(X), dtype=np.int64) if y is None else y
        normal, anomalies = images[y == 0], images[y == 1]
        if len(normal) == 0:
            raise ValueError("residual_rl needs normal rows (y == 0) to train its autoencoder")
        if len(anomalies) == 0:
            anomalies = pseudo_anomalies(normal, len(normal), rng)
        self._build()
        self._train_autoencoder(normal)
        feats_normal = residual_features(self._residuals(normal), cfg.grid_size)
        self.feature_mean, self.feature_std = feature_normalizer(feats_normal)
        features = torch.cat([(feats_normal - self.feature_mean) / self.feature_std, self._features(anomalies)])
        labels = np.r_[np.zeros(len(normal), dtype=np.int64), np.ones(len(anomalies), dtype=np.int64)]
        self._train_policy(features.numpy(), labels)

    # -- scoring and state ----------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, X: np.ndarray) -> np.ndarray:
        logits = self.policy(self._features(self._images(X)))
        return (logits[:, 1] - logits[:, 0]).numpy().astype(np.float64)

    def _get_state(self) -> dict[str, Any]:
        return {
            "ae": self.ae.state_dict(),
            "policy": self.policy.state_dict(),
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._build()
        self.ae.load_state_dict(state["ae"])
        self.policy.load_state_dict(state["policy"])
        self.feature_mean = state["feature_mean"]
        self.feature_std = state["feature_std"]
