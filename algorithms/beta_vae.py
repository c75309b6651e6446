"""Conditional beta-VAE over tabular rows: q(z | x, c), p(x | z, c), with c = 1 for anomalies.

Rows are MinMax-scaled, so the decoder ends in a sigmoid. The loss is the squared reconstruction
error of each feature divided by its variance in the training rows (a Gaussian likelihood in
standardised units), summed over features, plus ``beta`` times the KL divergence to N(0, I);
anomalies (rare) are up-weighted so that both conditions are learned.

Why the variance: MinMax-scaled features vary little (thyroid's six sum to a variance of 0.06),
so the plain squared error was far cheaper to pay than any KL cost. The posterior collapsed: the
anomalies' latent means were ~0.003 from the prior's and decoded samples spread over a fifth of the
data's spread (cardio: 0.30 against 3.5 summed standard deviation), so moving latents, with RL or
at random, changed almost nothing. Standardised, cardio's decoded spread is 1.9 and the latent
means 0.19 (``tests/test_swift_hydra.py::test_generator_latents_carry_information``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rlad.algorithms.torch_utils import mlp


MIN_FEATURE_VAR = 1e-4  # a constant feature must not dominate the loss


@dataclass
class BetaVAEConfig:
    latent_dim: int = 8
    hidden: int = 64
    beta: float = 4.0
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


class ConditionalBetaVAE(nn.Module):
    def __init__(self, n_features: int, cfg: BetaVAEConfig) -> None:
        super().__init__()
        self.n_features, self.latent_dim = n_features, cfg.latent_dim
        self.encoder = mlp([n_features + 1, cfg.hidden, cfg.hidden, 2 * cfg.latent_dim], act=nn.SiLU)
        self.decoder = mlp([cfg.latent_dim + 1, cfg.hidden, cfg.hidden, n_features], act=nn.SiLU)
        self.register_buffer("feature_var", torch.ones(n_features))  # set from the training rows

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, c[:, None]], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    @torch.no_grad()
    def anomaly_anchors(self, X_anomalies: np.ndarray) -> np.ndarray:
        """Latent means of known anomalies encoded under condition c = 1 (synthesis start points)."""
        return self.encode(torch.from_numpy(X_anomalies), torch.ones(len(X_anomalies)))[0].numpy()

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(torch.cat([z, c[:, None]], dim=1)))

    def loss(self, x: torch.Tensor, c: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row reconstruction error and KL divergence."""
        mu, logvar = self.encode(x, c)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = (F.mse_loss(self.decode(z, c), x, reduction="none") / self.feature_var).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return recon, beta * kl


def train_beta_vae(X: np.ndarray, c: np.ndarray, cfg: BetaVAEConfig) -> ConditionalBetaVAE:
    """Fit on rows ``X`` with conditions ``c`` (0 normal/unlabelled, 1 anomaly)."""
    torch.manual_seed(cfg.seed)
    vae = ConditionalBetaVAE(X.shape[1], cfg)
    vae.feature_var.copy_(torch.from_numpy(np.maximum(X.var(0), MIN_FEATURE_VAR).astype(np.float32)))
    Xt, ct = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(c.astype(np.float32))
    n_pos = float(ct.sum())
    weight = torch.where(ct > 0, (len(ct) - n_pos) / max(n_pos, 1.0), 1.0)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(Xt), generator=gen).split(cfg.batch_size):
            recon, kl = vae.loss(Xt[batch], ct[batch], cfg.beta)
            w = weight[batch]
            loss = ((recon + kl) * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return vae.eval()
