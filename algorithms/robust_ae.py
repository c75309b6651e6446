"""Robust autoencoder (Chalapathy, Menon and Chawla, "Robust, Deep and Inductive Anomaly
Detection", ECML-PKDD 2017): the training rows are split as ``X = D(E(X - N)) + N``, an
autoencoder fit to the cleaned rows ``X - N`` and a row-sparse outlier part ``N`` that absorbs
the rows it cannot reconstruct, so anomalies in an unlabelled training set do not shape the
autoencoder. The paper's ``RAE`` peer of Kumagai et al. (AISTATS 2023).

Alternating minimisation of ``||X - N - D(E(X - N))||^2 + lam ||N||_{2,1}``: ``epochs_per_round``
epochs of Adam on the autoencoder with ``N`` fixed, then ``N`` in closed form (the proximal step
of the row-wise group lasso: each row's residual shrunk by ``lam``). ``lam`` is scale-free here:
``lam_scale`` times the median row residual norm of the current round, so a row enters ``N`` only
when its residual stands out. Inductive scoring: a new row's squared reconstruction error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.torch_utils import apply_batched, minibatches, mlp, module_state, resolve_device, seeded


@dataclass
class RobustAEConfig:
    hidden_dims: tuple[int, ...] = (64, 16)  # encoder widths; the decoder mirrors them
    rounds: int = 10  # alternations of (autoencoder, N)
    epochs_per_round: int = 10
    lam_scale: float = 1.5  # lam = lam_scale * median row residual norm
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not self.hidden_dims or self.rounds < 1 or self.lam_scale <= 0:
            raise ValueError("need hidden_dims, rounds >= 1 and lam_scale > 0")


def group_shrink(R: np.ndarray, lam: float) -> np.ndarray:
    """Proximal operator of ``lam * sum_rows ||.||_2``: each row shrunk towards 0 by ``lam``."""
    norms = np.linalg.norm(R, axis=1, keepdims=True)
    return R * np.maximum(1.0 - lam / np.maximum(norms, 1e-12), 0.0)


class RobustAEDetector(BaseDetector):
    """Robust autoencoder; ``outliers_`` holds the fitted row-sparse part ``N`` of the training rows."""

    Config = RobustAEConfig
    kind = "rae"

    def _build(self) -> None:
        dims = [self.n_features_in_, *self.config.hidden_dims]
        self.device = resolve_device()
        self.net = nn.Sequential(mlp(dims, out_act=nn.ReLU), mlp(dims[::-1])).to(self.device)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cfg = self.config
        with seeded(cfg.seed):
            self._build()
            opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
            N = np.zeros_like(X)
            for _ in range(cfg.rounds):
                clean = torch.as_tensor(X - N, device=self.device)
                for idx in minibatches(len(X), cfg.batch_size, cfg.epochs_per_round, self.device):
                    loss = (self.net(clean[idx]) - clean[idx]).pow(2).sum(dim=1).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                R = X - apply_batched(self.net, X - N, self.device).astype(np.float32)
                N = group_shrink(R, cfg.lam_scale * float(np.median(np.linalg.norm(R, axis=1))))
        self.outliers_ = N

    def _score(self, X: np.ndarray) -> np.ndarray:
        return apply_batched(lambda x: (self.net(x) - x).pow(2).sum(dim=1), X, self.device)

    def _get_state(self) -> dict[str, Any]:
        return {"net": module_state(self.net)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._build()
        self.net.load_state_dict(state["net"])
