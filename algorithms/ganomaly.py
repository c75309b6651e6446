"""GANomaly (Akcay, Atapour-Abarghouei and Breckon, ACCV 2018).

The generator is an encoder-decoder-encoder ``x -> z = G_E(x) -> x_hat = G_D(z) -> z_hat = E(x_hat)``;
a discriminator ``D`` tells ``x`` from ``x_hat``. The generator minimises
``w_adv * ||f(x) - f(x_hat)||^2 + w_con * |x - x_hat|_1 + w_enc * ||z - z_hat||^2`` with ``f`` the
discriminator's penultimate features (feature matching); ``D`` minimises binary cross-entropy and
is re-initialised when its loss collapses (as in the authors' code). The anomaly score is the
per-row mean of ``(z - z_hat)^2`` (the authors' code; the paper writes the L1 norm).

Rows are tabular (MLP nets) or, with ``image_shape=(C, H, W)``, flattened images (conv nets of
any H, W). Training uses only rows with ``y == 0`` (unlabelled), for a fixed number of epochs:
no model selection on test data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.torch_utils import apply_batched, resolve_device, minibatches, mlp, module_state, seeded


@dataclass
class GANomalyConfig:
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (64, 32)  # MLP widths (tabular rows)
    image_shape: tuple[int, int, int] | None = None  # (C, H, W): conv nets over flattened images
    conv_channels: tuple[int, ...] = (16, 32)  # one stride-2 conv block per entry (images)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    seed: int = 0


class ConvEncoder(nn.Module):
    """Flattened ``(C, H, W)`` images -> stride-2 conv blocks -> linear map to ``out_dim``."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        c_in, h, w = self.image_shape
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
            layers += [nn.BatchNorm2d(c_out)] if i > 0 else []
            layers += [nn.LeakyReLU(0.2)]
            c_in, h, w = c_out, math.ceil(h / 2), math.ceil(w / 2)
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(c_in * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x.view(-1, *self.image_shape)))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear map, then upsample + conv blocks back to each
    encoder resolution; returns flattened images."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...], in_dim: int) -> None:
        super().__init__()
        c, h, w = image_shape
        sizes = [(h, w)]
        for _ in channels:
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        self.start = (channels[-1], *sizes[-1])
        self.fc = nn.Linear(in_dim, channels[-1] * sizes[-1][0] * sizes[-1][1])
        layers: list[nn.Module] = []
        c_outs = list(reversed(channels[:-1])) + [c]
        for i, (c_in, c_out, size) in enumerate(zip(reversed(channels), c_outs, reversed(sizes[:-1]))):
            layers += [nn.ReLU(), nn.Upsample(size=size), nn.Conv2d(c_in, c_out, 3, padding=1)]
            layers += [nn.BatchNorm2d(c_out)] if i < len(channels) - 1 else []
        self.convs = nn.Sequential(*layers, nn.Flatten())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.convs(self.fc(z).view(-1, *self.start))


class Discriminator(nn.Module):
    """Feature extractor ``f`` and a linear real/fake logit on top of it."""

    def __init__(self, features: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.features = features
        self.logit = nn.Linear(feature_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.logit(f).squeeze(-1), f


class Generator(nn.Module):
    """Encoder-decoder-encoder: returns ``(z, x_hat, z_hat)``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, encoder2: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder, self.encoder2 = encoder, decoder, encoder2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return z, x_hat, self.encoder2(x_hat)


def build_nets(n_features: int, cfg: GANomalyConfig) -> tuple[Generator, Discriminator]:
    """MLP nets for tabular rows, conv nets when ``cfg.image_shape`` is set."""
    nz = cfg.latent_dim
    if cfg.image_shape is None:
        dims = [n_features, *cfg.hidden_dims]

        def enc() -> nn.Module:
            return mlp([*dims, nz], act=nn.LeakyReLU)

        dec = mlp([nz, *reversed(dims)], act=nn.ReLU)
        feat = mlp(dims, act=nn.LeakyReLU, out_act=nn.LeakyReLU)
        return Generator(enc(), dec, enc()), Discriminator(feat, dims[-1])
    shape, ch = tuple(cfg.image_shape), tuple(cfg.conv_channels)
    if math.prod(shape) != n_features:
        raise ValueError(f"image_shape {shape} has {math.prod(shape)} pixels but rows have {n_features} features")
    gen = Generator(ConvEncoder(shape, ch, nz), ConvDecoder(shape, ch, nz), ConvEncoder(shape, ch, nz))
    return gen, Discriminator(nn.Sequential(ConvEncoder(shape, ch, ch[-1]), nn.LeakyReLU(0.2)), ch[-1])


class GANomalyDetector(BaseDetector):
    """GANomaly: score = mean squared distance between ``z = G_E(x)`` and ``z_hat = E(G_D(z))``."""

    Config = GANomalyConfig
    kind = "ganomaly"

    def _build(self) -> None:
        self.device = resolve_device()
        gen, disc = build_nets(self.n_features_in_, self.config)
        self.gen, self.disc = gen.to(self.device), disc.to(self.device)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cfg = self.config
        rows = X if y is None else X[y == 0]
        with seeded(cfg.seed):
            self._build()
            data = torch.as_tensor(rows, device=self.device)
            opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
            opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
            self.gen.train()
            self.disc.train()
            for idx in minibatches(len(data), cfg.batch_size, cfg.epochs, self.device):
                x = data[idx]
                z, x_hat, z_hat = self.gen(x)
                with torch.no_grad():
                    _, f_real = self.disc(x)
                _, f_fake = self.disc(x_hat)
                loss_g = cfg.w_adv * F.mse_loss(f_fake, f_real) + cfg.w_con * F.l1_loss(x_hat, x) + cfg.w_enc * F.mse_loss(z_hat, z)
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()

                logit_real, _ = self.disc(x)
                logit_fake, _ = self.disc(x_hat.detach())
                loss_d = F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real)) + F.binary_cross_entropy_with_logits(
                    logit_fake, torch.zeros_like(logit_fake)
                )
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()
                if loss_d.item() < 1e-5:
                    for m in self.disc.modules():
                        if hasattr(m, "reset_parameters"):
                            m.reset_parameters()
        self.gen.eval()
        self.disc.eval()

    def _score(self, X: np.ndarray) -> np.ndarray:
        def score(x: torch.Tensor) -> torch.Tensor:
            z, _, z_hat = self.gen(x)
            return (z - z_hat).pow(2).mean(dim=1)

        return apply_batched(score, X, self.device)

    def _get_state(self) -> dict[str, Any]:
        return {"generator": module_state(self.gen), "discriminator": module_state(self.disc)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._build()
        self.gen.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.gen.eval()
        self.disc.eval()
