"""Mamba Mixture-of-Experts anomaly detector for tabular rows.

A row becomes a token sequence: its features and (``knn_feature``) its distance to its nearest
training rows, then (``rank_features``) each of these columns' rank among the training rows,
grouped into patches of ``ceil(width / max_tokens)``, each with its own linear embedding. A
router reads the mean token and sends each row to its ``top_k`` experts (sparse: an expert runs
only on the rows routed to it); each expert is ``n_layers`` pre-norm residual Mamba blocks
(SiLU-gated selective SSM) followed by mean pooling. The weighted expert outputs feed a linear
head that gives the anomaly logit. Training minimises class-weighted
binary cross-entropy plus ``balance_coef`` times the Switch-Transformer load-balancing loss
``E * sum_e f_e P_e`` (f_e: share of routing slots given to expert e, P_e: mean router probability),
for at most ``epochs`` epochs, stopping early on the validation AUC of held-out labelled anomalies
against held-out unlabelled rows (:func:`validation_split`).

Cost grows linearly with the number of tokens (every token runs the scan over a
``2 d_model x d_state`` state), hence ``max_tokens = 16``: on celeba (39 features) and optdigits
(64) it trained many times faster than one token per feature with all 20 epochs, at a higher test
AUC (``benchmarks/results/mamba_moe_fit.csv``).

Rank features: a min-max scaled feature whose values crowd near 0 (a long tail) gives the network
one tiny input range for most rows; its rank spreads them over [0, 1], as trees see them. Appending
the ranks (not replacing the values, which keep the extremes: ranks saturate beyond the training
range) raised the large detector's mean AUCs on the development sets; ranks instead of the values
lowered them (trial: ``benchmarks/results/setting_trials.csv``).

Neighbour distance (``knn_feature``): the row's mean distance to its 5 nearest training rows
(PyOD's KNN default; the row itself and its duplicates excluded, so a training row and a new row at
the same place get the same value) becomes one more column, ranked like the features. It is what
unsupervised detectors see and a network fitted to a few labelled anomalies does not: where
anomalies are isolated but the labelled ones few (Ionosphere), the large detector alone scored
far below the kNN distance alone. With it the large detector gained on the development seeds and
on seeds 3-5, not used to choose it (``benchmarks/results/mamba_moe_training.csv``). The reference
rows (real rows only: Swift Hydra's synthetic anomalies are not neighbours) are a seeded sample of
at most ``knn_rows``, kept in the checkpoint.

Members: ``members`` networks trained independently (their own seeds: initialisation, validation
split, batch order) and their logits averaged, for the large detector where accuracy matters more
than latency (trial: ``benchmarks/results/setting_trials.csv``).

Number of experts (when ``n_experts`` is None), from data complexity: with ``k90`` the number of
principal components explaining 90% of the training variance,
``n_experts = clip(1 + round(log2(1 + k90)), 2, max_experts)``: one more expert for every doubling
of the intrinsic dimension.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.floor import BELOW_WEIGHT, CONFIDENT, FITTED_FUSIONS
from rlad.algorithms.mamba import Mamba
from rlad.algorithms.torch_utils import apply_batched, module_state, resolve_device
from rlad.core import progress


RANK_KNOTS = 256  # training quantiles kept per feature for rank features


@dataclass
class MambaMoEConfig:
    n_experts: int | None = None
    max_experts: int = 8
    top_k: int = 2
    d_model: int = 32
    d_state: int = 8
    n_layers: int = 1  # residual Mamba blocks per expert
    max_tokens: int = 16  # features are grouped into at most this many tokens (cost grows with it)
    rank_features: bool = True  # append each feature's rank among the training rows (module docstring)
    knn_feature: int = 5  # append the row's mean distance to its k nearest training rows (module docstring); 0: off
    knn_rows: int = 2048  # training rows kept as the neighbours' reference (a seeded sample of larger data sets)
    members: int = 1  # networks trained independently (seeds seed, seed + 1, ...); the detector averages their logits
    epochs: int = 20  # at most: training stops early when the validation AUC stops improving
    unvalidated_epochs: int = 5  # at most, without a validation split (too few labelled anomalies to hold out)
    batch_size: int = 256
    min_batches: int = 8  # an epoch has at least this many mini-batches: small data sets get smaller ones
    lr: float = 3e-3
    weight_decay: float = 1e-4
    balance_coef: float = 0.01
    max_pos_weight: float = 50.0
    val_fraction: float = 0.2  # held-out share of labelled and of unlabelled rows for early stopping; 0: off
    patience: int = 3  # epochs without a better validation AUC before training stops
    min_val_anomalies: int = 4  # early stopping only with this many held-out labelled anomalies
    seed: int = 0
    device: str = "auto"
    # Unsupervised floor (algorithms/floor.py): fuse the network's score with an IForest fitted on all
    # training rows, both quantile-calibrated on the unlabelled rows; the registry's mamba_moe turns it on.
    floor: bool = False
    floor_weight: float | None = None  # the IForest's share (cascade: in the network's top rows); None: leave-one-type-out
    # "cascade": the network's confident rows first, the rest with the IForest at 0.5 (issue 37); "tail": one
    # weighted mean of tail scores for every row (the fusion before the cascade)
    floor_fusion: str = "cascade"
    # the cascade's dial between labelled types and new ones (floor_frontier_dev.csv): the network quantile
    # from which its rows stay on top (lowered where unlabelled rows score like the labelled anomalies),
    # and the IForest's weight below them; higher values of both find more unlabelled types, fewer labelled ones
    floor_confident: float = CONFIDENT
    floor_below: float = BELOW_WEIGHT

    def __post_init__(self) -> None:
        """Values no network can train with, refused where the config is built (a CLI's
        ``--config`` then prints one line) rather than deep inside ``fit``."""
        for name in ("members", "epochs", "top_k", "d_model", "d_state", "n_layers", "max_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.n_experts is not None and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.floor_weight is not None and not 0.0 <= self.floor_weight <= 1.0:
            raise ValueError(f"floor_weight={self.floor_weight} must be in [0, 1]")
        if self.floor_fusion not in FITTED_FUSIONS:
            raise ValueError(f"floor_fusion={self.floor_fusion!r} must be one of {', '.join(FITTED_FUSIONS)}")
        if not 0.0 < self.floor_confident < 1.0:
            raise ValueError(f"floor_confident={self.floor_confident} must be in (0, 1)")
        if not 0.0 <= self.floor_below <= 1.0:
            raise ValueError(f"floor_below={self.floor_below} must be in [0, 1]")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """P(anomaly) of a logit: the network's own probability (without the floor)."""
    return 1.0 / (1.0 + np.exp(-logits))


def experts_from_complexity(X: np.ndarray, max_experts: int = 8) -> int:
    """The documented rule: ``clip(1 + round(log2(1 + k90)), 2, max_experts)``."""
    Xc = X - X.mean(0, keepdims=True)
    var = np.linalg.svd(Xc[: min(len(Xc), 5000)], compute_uv=False) ** 2
    if var.sum() <= 0:
        return 2
    k90 = int(np.searchsorted(np.cumsum(var) / var.sum(), 0.9) + 1)
    return int(np.clip(1 + round(math.log2(1 + k90)), 2, max_experts))


class ResidualMamba(nn.Module):
    """Pre-norm residual Mamba block: (b, L, d) -> (b, L, d)."""

    def __init__(self, d_model: int, d_state: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mamba = Mamba(d_model, d_state=d_state)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mamba(self.norm(tokens))


class MambaExpert(ResidualMamba):
    """``n_layers`` residual Mamba blocks, mean-pooled: (b, L, d) -> (b, d). The first block's
    parameters keep their names (``norm``, ``mamba``), so one-layer checkpoints load unchanged."""

    def __init__(self, d_model: int, d_state: int, n_layers: int = 1) -> None:
        super().__init__(d_model, d_state)
        self.deeper = nn.ModuleList(ResidualMamba(d_model, d_state) for _ in range(n_layers - 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = super().forward(tokens)
        for block in self.deeper:
            h = block(h)
        return h.mean(dim=1)


class _RowRoute(nn.Module):
    """One row -> its tokens, top-k experts and their weights (what :meth:`MambaMoE.score_row` traces)."""

    def __init__(self, moe: "MambaMoE") -> None:
        super().__init__()
        self.moe = moe

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tok = self.moe.tokens(x)
        idx, weights, _ = self.moe.route(tok)
        return tok, idx, weights


class _RowMix(nn.Module):
    """A row's tokens and expert weights -> its logit through the given experts and the head."""

    def __init__(self, moe: "MambaMoE", experts: tuple[int, ...]) -> None:
        super().__init__()
        self.experts, self.head = nn.ModuleList(moe.experts[e] for e in experts), moe.head

    def forward(self, tok: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        mixed = sum(weights[:, j, None] * expert(tok) for j, expert in enumerate(self.experts))
        return self.head(mixed).squeeze(-1)


class MambaMoE(nn.Module):
    """Rows (b, n_features) -> (anomaly logits (b,), load-balancing loss)."""

    def __init__(self, n_features: int, n_experts: int, cfg: MambaMoEConfig) -> None:
        super().__init__()
        if cfg.n_layers < 1:
            raise ValueError(f"n_layers={cfg.n_layers} must be at least 1")
        if not 1 <= cfg.top_k <= n_experts:
            raise ValueError(f"top_k={cfg.top_k} must be in [1, n_experts={n_experts}]")
        self.n_experts, self.top_k, self.rank_features = n_experts, cfg.top_k, cfg.rank_features
        self.knn, self.knn_rows = cfg.knn_feature, cfg.knn_rows
        columns = n_features + (1 if self.knn else 0)  # the features, then (knn_feature) the neighbour distance
        width = 2 * columns if cfg.rank_features else columns  # values per row: the columns, then their ranks
        self.patch = math.ceil(width / cfg.max_tokens)
        self.n_tokens = math.ceil(width / self.patch)
        # Set by fit_inputs; buffers, so checkpoints and DDP replicas carry them.
        if self.knn:  # its row count is the data's: loading a state resizes it (_load_from_state_dict)
            self.register_buffer("reference", torch.zeros(0, n_features))
        if cfg.rank_features:
            self.register_buffer("rank_knots", torch.zeros(columns, RANK_KNOTS))
        # A separate linear embedding per token (feature group), as in FT-Transformer.
        self.embed_weight = nn.Parameter(torch.randn(self.n_tokens, self.patch, cfg.d_model) / math.sqrt(self.patch))
        self.embed_bias = nn.Parameter(0.02 * torch.randn(self.n_tokens, cfg.d_model))
        self.router = nn.Linear(cfg.d_model, n_experts)
        self.experts = nn.ModuleList(MambaExpert(cfg.d_model, cfg.d_state, cfg.n_layers) for _ in range(n_experts))
        self.head = nn.Sequential(nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, 1))
        self._traced: dict[tuple[Any, torch.dtype], torch.jit.ScriptModule] = {}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if self.knn and prefix + "reference" in state_dict:
            self.reference = torch.empty_like(state_dict[prefix + "reference"], device=self.reference.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # traced experts do not pickle: each process traces its own
        return {**self.__dict__, "_traced": {}}

    def _apply(self, *args: Any, **kwargs: Any) -> "MambaMoE":  # .to(), .float(), ...: traces hold the old tensors
        self._traced = {}
        return super()._apply(*args, **kwargs)

    def _row_trace(self, key: Any, module: Callable[[], nn.Module], *example: torch.Tensor) -> torch.jit.ScriptModule:
        """``module()`` traced by TorchScript for one row on first use (it shares this net's
        parameters and buffers, so loaded weights apply)."""
        key = (key, example[0].dtype)
        if key not in self._traced:
            with warnings.catch_warnings():  # the scan's size test is a constant for one row: that is the point
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                self._traced[key] = torch.jit.trace(module(), example, check_trace=False)
        return self._traced[key]

    def score_row(self, x: torch.Tensor) -> torch.Tensor:
        """The logit of one row (``x``: (1, n_features)) on CPU without gradients, as two traced
        graphs: tokens and routing, then the row's experts mixed and the head, one graph per set of
        experts, traced on first use (~50 ms per expert in it, once). A row's small ATen ops (~100
        per expert) then run without Python between them: single-row scoring is bound by that fixed
        cost, not by arithmetic (``benchmarks/bench_mamba_moe.py``)."""
        tok, idx, weights = self._row_trace("route", lambda: _RowRoute(self), x)(x)
        chosen = idx[0].tolist()
        experts = tuple(sorted(chosen))
        if list(experts) != chosen:  # one graph per set of experts, not per order
            weights = weights[:, sorted(range(len(chosen)), key=chosen.__getitem__)]
        return self._row_trace(experts, lambda: _RowMix(self, experts), tok, weights)(tok, weights)

    def fit_inputs(self, X: np.ndarray, seed: int) -> None:
        """From the real training rows ``X`` (synthetic ones are neither neighbours nor ranked
        against): keep at most ``knn_rows`` of them (a sample drawn with ``seed``)
        as the neighbours' reference (``knn_feature``), then ``RANK_KNOTS`` quantiles of each
        column (``rank_features``)."""
        X = np.asarray(X, np.float32)
        if self.knn:
            rows = np.sort(np.random.default_rng(seed).permutation(len(X))[: self.knn_rows])
            self.reference = torch.from_numpy(X[rows]).to(self.reference.device)
        if self.rank_features:
            with torch.no_grad():
                columns = torch.cat([self.columns(chunk.to(self.rank_knots.device)).cpu()
                                     for chunk in torch.from_numpy(X).split(4096)]).double().numpy()
            knots = np.quantile(columns, np.linspace(0.0, 1.0, RANK_KNOTS), axis=0).T
            self.rank_knots.copy_(torch.from_numpy(np.ascontiguousarray(knots)))

    def neighbour_distance(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_features) -> (b, 1): the mean distance to the ``knn`` nearest reference rows other
        than the row itself (or its duplicates: distance 0), so a training row and a new row at the
        same place get the same value. 0 before :meth:`fit_inputs`."""
        if len(self.reference) < 2:
            return x.new_zeros(x.shape[0], 1)
        # Differences, not the matrix-product expansion: a row's distance to itself is exactly 0.
        d = torch.cdist(x, self.reference, compute_mode="donot_use_mm_for_euclid_dist")
        d = d.masked_fill(d == 0, float("inf"))
        near = d.topk(min(self.knn, len(self.reference) - 1), dim=1, largest=False).values
        return near.nan_to_num(posinf=0.0).mean(1, keepdim=True)

    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_features) -> the values the ranks and tokens see: the features, then
        (``knn_feature``) the neighbour distance."""
        return torch.cat([x, self.neighbour_distance(x)], dim=1) if self.knn else x

    def ranks(self, x: torch.Tensor) -> torch.Tensor:
        """Each value's mid-rank among its column's training quantiles: :meth:`columns` -> the same
        shape, in [0, 1] (ties, e.g. a binary feature's many zeros, share their middle rank)."""
        values = x.T.contiguous()
        below = torch.searchsorted(self.rank_knots, values, side="left")
        upto = torch.searchsorted(self.rank_knots, values, side="right")
        return ((below + upto).to(x.dtype) / (2 * self.rank_knots.shape[1])).T

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n_features) -> (b, n_tokens, d_model): the :meth:`columns`, then (``rank_features``)
        their ranks, in groups of ``patch`` values: this order scored better than ranks interleaved with
        their features (trial: ``benchmarks/results/setting_trials.csv``)."""
        x = self.columns(x)
        if self.rank_features:
            x = torch.cat([x, self.ranks(x)], dim=1)
        x = F.pad(x, (0, self.n_tokens * self.patch - x.shape[1])).view(x.shape[0], self.n_tokens, self.patch)
        return torch.einsum("btp,tpd->btd", x, self.embed_weight) + self.embed_bias

    def route(self, tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k expert indices, their renormalised weights, and all router probabilities."""
        probs = F.softmax(self.router(tok.mean(dim=1)), dim=-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        return idx, weights / weights.sum(-1, keepdim=True), probs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] == 1 and not (self.training or torch.is_grad_enabled()) and x.device.type == "cpu":
            logit = self.score_row(x)
            return logit, logit.new_zeros(())
        tok = self.tokens(x)
        idx, weights, probs = self.route(tok)
        mixed = tok.new_zeros(x.shape[0], tok.shape[-1])
        for e in idx.unique().tolist():  # only the experts some row is routed to
            rows, slot = (idx == e).nonzero(as_tuple=True)
            mixed.index_add_(0, rows, weights[rows, slot, None] * self.experts[e](tok[rows]))
        if not self.training:  # the load-balancing loss only matters for training
            return self.head(mixed).squeeze(-1), mixed.new_zeros(())
        load = F.one_hot(idx, self.n_experts).float().sum(1).mean(0) / self.top_k
        balance = self.n_experts * (load * probs.mean(0)).sum()
        return self.head(mixed).squeeze(-1), balance


def positive_weight(y: np.ndarray, cfg: MambaMoEConfig) -> float:
    """BCE weight of the anomaly class: #normal / #anomaly rows, capped at ``max_pos_weight``.
    Synthetic anomalies count as rows: counting their loss weights instead scored lower in a trial
    (``benchmarks/results/setting_trials.csv``)."""
    n_pos = float(y.sum())
    return min((len(y) - n_pos) / max(n_pos, 1.0), cfg.max_pos_weight)


def real_rows(n: int, sample_weight: np.ndarray | None) -> np.ndarray:
    """Which of ``n`` rows are real: loss weight 1 (Swift Hydra's synthetic anomalies weigh
    otherwise). Only real rows validate and serve as neighbours and rank knots."""
    return np.ones(n, dtype=bool) if sample_weight is None else np.asarray(sample_weight) == 1


def validation_split(y: np.ndarray, cfg: MambaMoEConfig, real: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Training and validation row indices: ``val_fraction`` of the labelled anomalies and of the
    unlabelled rows held out (only what a user knows: never the true labels of unlabelled rows),
    drawn among the ``real`` rows only (synthetic anomalies never validate). None when early
    stopping is off or fewer than ``min_val_anomalies`` labelled anomalies would be held out: an
    AUC over 2-3 anomalies picked epoch 1 on Ionosphere, below all epochs' test AUC
    (``benchmarks/results/setting_trials.csv``)."""
    rng = np.random.default_rng(cfg.seed)
    real = np.ones(len(y), dtype=bool) if real is None else real
    held = [rng.permutation(np.flatnonzero((y == c) & real))[: int(round(cfg.val_fraction * ((y == c) & real).sum()))]
            for c in (1, 0)]
    if cfg.val_fraction <= 0 or len(held[0]) < max(cfg.min_val_anomalies, 2) or len(held[1]) < 2:
        return None
    val = np.concatenate(held)
    return np.setdiff1d(np.arange(len(y)), val), val


def epoch_budget(y: np.ndarray, cfg: MambaMoEConfig, real: np.ndarray | None = None) -> int:
    """``epochs`` when :func:`validation_split` can stop training early, else at most
    ``unvalidated_epochs``: with a few labelled anomalies and nothing to stop on, longer training
    fits them ever more tightly; with rank features 5 epochs scored best in a trial
    (``benchmarks/results/setting_trials.csv``)."""
    return cfg.epochs if validation_split(y, cfg, real) is not None else min(cfg.epochs, cfg.unvalidated_epochs)


def train_mamba_moe(net: nn.Module, X: np.ndarray, y: np.ndarray, cfg: MambaMoEConfig, device: torch.device,
                    pos_weight: float, on_epoch: Callable[[int, float], None] | None = None,
                    sample_weight: np.ndarray | None = None, target: np.ndarray | None = None) -> list[float]:
    """Class-weighted BCE + load balancing with AdamW over shuffled mini-batches of ``(X, y)``;
    returns each epoch's mean loss. ``net`` may be wrapped (DDP) as long as it returns
    ``(logits, balance)``; ``on_epoch(epoch, loss)`` is called after every epoch. Rows with a
    ``sample_weight`` other than 1 (Swift Hydra's synthetic anomalies) weigh that much in the loss
    and are never held out for validation. ``target`` (per row, in [0, 1]) replaces ``y`` as the
    BCE target (distillation: labels blended with a teacher's probabilities); ``y`` still picks the
    validation rows. ``pos_weight`` scales the positive part of every row's loss, soft targets
    included, so a row at target ``t`` fits towards ``pw t / (pw t + 1 - t)``: an unlabelled row the
    teacher finds slightly suspicious (``t`` 0.05, ``pw`` 50) pulls towards 0.72, which amplifies
    the teacher's suspicion among the unlabelled rows (where most anomalies are at la = 0.1). That
    is kept on purpose: weighting labelled rows by ``pw`` instead (targets fitted as given) lowered
    the AUCs of Swift Hydra and of its Inference Module (trial: ``benchmarks/results/setting_trials.csv``).
    Mini-batches shrink (to 16 rows at least) so that an
    epoch has ``min_batches`` of them: 10 epochs of a 170-row data set were 10 updates.

    Early stopping (unwrapped nets only: DDP workers would stop at different epochs): with
    :func:`validation_split`, after each epoch the AUC of held-out labelled anomalies against
    held-out unlabelled rows; training stops after ``patience`` epochs without a better one and
    the best epoch's weights are kept. Without a split, :func:`epoch_budget` caps the epochs (DDP
    workers see a shard: their caller sets ``cfg.epochs`` from the whole data set)."""
    weight = np.ones(len(y), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
    target = np.asarray(y if target is None else target, np.float32)
    ddp = isinstance(net, nn.parallel.DistributedDataParallel)
    real = real_rows(len(y), sample_weight)
    split = None if ddp else validation_split(y, cfg, real)
    epochs = cfg.epochs if ddp else epoch_budget(y, cfg, real)
    val = None
    if split is not None:
        val = torch.from_numpy(X[split[1]]).to(device), y[split[1]]
        X, target, weight = X[split[0]], target[split[0]], weight[split[0]]
    gen = torch.Generator().manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, max(16, math.ceil(len(X) / cfg.min_batches)))
    Xt, yt, wt = torch.from_numpy(X), torch.from_numpy(target), torch.from_numpy(weight)
    pw = torch.tensor(pos_weight, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    best_auc, best_state, stale = -1.0, None, 0
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for batch in torch.randperm(len(Xt), generator=gen).split(batch_size):
            xb, yb, wb = Xt[batch].to(device), yt[batch].to(device), wt[batch].to(device)
            logits, balance = net(xb)
            loss = F.binary_cross_entropy_with_logits(logits, yb, weight=wb, pos_weight=pw) + cfg.balance_coef * balance
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        losses.append(total / len(Xt))
        progress.update("epoch", epoch + 1, epochs, loss=losses[-1])
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if val is not None:
            net.eval()
            with torch.no_grad():
                auc = roc_auc_score(val[1], net(val[0])[0].cpu().numpy())
            if auc > best_auc:
                best_auc, best_state, stale = auc, module_state(net), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return losses


def member_seeds(cfg: MambaMoEConfig) -> range:
    """Each member network's seed (its initialisation, validation split and batch order)."""
    return range(cfg.seed, cfg.seed + cfg.members)


def train_members(X: np.ndarray, y: np.ndarray, cfg: MambaMoEConfig, n_experts: int, device: torch.device,
                  pos_weight: float, inputs: np.ndarray, sample_weight: np.ndarray | None = None,
                  target: np.ndarray | None = None, wrap: Callable[[MambaMoE], nn.Module] | None = None,
                  on_epoch: Callable[[list[MambaMoE], int, float], None] | None = None,
                  ) -> Iterator[tuple[list[MambaMoE], list[float]]]:
    """The one member loop of ``MambaMoEDetector.fit`` and of Ray Train's workers: ``cfg.members``
    networks, one after another, each built and trained with its own seed (:func:`member_seeds`)
    by :func:`train_mamba_moe`; after each, yields the networks so far and its epoch losses.
    ``inputs``: the real rows the neighbours' reference and rank knots come from (all of them, also
    where ``X`` is one worker's shard, so replicas agree). ``wrap`` (Ray Train's ``prepare_model``)
    wraps a network for training; ``on_epoch(nets, epoch, loss)`` sees the networks so far, the
    one in training last. Several members report their count as progress (a bar over the members,
    not one whose epochs restart with each member)."""
    nets: list[MambaMoE] = []
    for i, seed in enumerate(member_seeds(cfg)):
        if cfg.members > 1:
            progress.update("member", i, cfg.members)
        torch.manual_seed(seed)
        net = MambaMoE(X.shape[1], n_experts, cfg)
        net.fit_inputs(inputs, seed)
        nets.append(net.to(device))
        report = None if on_epoch is None else (lambda epoch, loss: on_epoch(nets, epoch, loss))
        losses = train_mamba_moe(net if wrap is None else wrap(net), X, y, dataclasses.replace(cfg, seed=seed), device,
                                 pos_weight, on_epoch=report, sample_weight=sample_weight, target=target)
        if cfg.members > 1 and len(nets) == cfg.members:
            progress.update("member", cfg.members, cfg.members)
        yield nets, losses


def detector_state(n_experts: int, nets: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """A :class:`MambaMoEDetector` state from its members' weights (in seed order): the first under
    ``net`` (as before members existed), the others under ``members``."""
    return {"n_experts": n_experts, "net": nets[0], **({"members": nets[1:]} if len(nets) > 1 else {})}


# Scan-state values per expert in one CPU scoring chunk. 4,096-row batches (cardio, thyroid): the
# large detector (one 64-wide expert) ran 1.4-1.6x faster in 512-row chunks, the Inference Module
# (3-4 32-wide experts, top-1) fastest in 2,048-row chunks; this budget gives 256 and 1,536-2,048.
CACHED_STATES = 1 << 18


class MambaMoEDetector(BaseDetector):
    """Supervised/semi-supervised: ``y`` marks anomalies (labelled or synthetic) with 1."""

    Config = MambaMoEConfig
    kind = "mamba_moe"
    # sample_weight: per row, default 1, scales each row's loss (Swift Hydra's synthetic anomalies);
    # target: per row in [0, 1], default y, what the loss fits (distillation)
    fit_params = ("sample_weight", "target")

    def _build(self, n_features: int, n_experts: int) -> None:
        self.n_experts_ = n_experts
        self.nets: list[MambaMoE] = []
        for seed in member_seeds(self.config):
            torch.manual_seed(seed)
            self.nets.append(MambaMoE(n_features, n_experts, self.config))
        self.device = resolve_device(self.config.device)

    @property
    def net(self) -> MambaMoE:
        """The first member (the only one unless ``members > 1``)."""
        return self.nets[0]

    def _fit(self, X: np.ndarray, y: np.ndarray | None, sample_weight: np.ndarray | None = None,
             target: np.ndarray | None = None) -> None:
        if y is None or y.sum() == 0:
            raise ValueError("MambaMoEDetector is supervised: y must mark at least one anomaly with 1")
        self.n_experts_ = self.config.n_experts or experts_from_complexity(X, self.config.max_experts)
        self.device = resolve_device(self.config.device)
        members = list(train_members(X, y, self.config, self.n_experts_, self.device, positive_weight(y, self.config),
                                     X[real_rows(len(X), sample_weight)], sample_weight, target))
        self.nets = members[-1][0]
        self.train_losses_ = members[0][1]  # the first member's
        self._fit_floor(X, y, sample_weight)

    def _fit_floor(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        """The floor on the trained networks (``config.floor``), from the real rows only."""
        self.floor_ = None
        if self.config.floor:
            from rlad.algorithms.floor import Floor

            real = real_rows(len(X), sample_weight)
            Xr, yr = X[real], y[real]

            def fold_scorer(Xf: np.ndarray, yf: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
                one = MambaMoEDetector(dataclasses.replace(self.config, members=1, floor=False, seed=seed)).fit(Xf, yf)
                return one.logits

            self.floor_ = Floor(self.config.seed, self.config.floor_fusion, self.config.floor_confident,
                                self.config.floor_below).fit(Xr, yr, self.logits(Xr), self.config.floor_weight, fold_scorer)

    def _after_adopt(self, X: np.ndarray, y: Any, fit_params: dict[str, np.ndarray]) -> None:
        """Networks trained elsewhere (Ray Train's workers; their state has no floor) get the floor
        ``fit`` gives its members (``config.floor``), fitted here before the one calibration."""
        if not self.config.floor or getattr(self, "floor_", None) is not None:
            return
        if y is None:
            raise ValueError("MambaMoEDetector.adopt needs y to fit the floor (config.floor) on networks trained elsewhere")
        self._fit_floor(X, np.asarray(y).astype(np.int64).ravel(), fit_params.get("sample_weight"))

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The anomaly logit per row (the net is on its device in eval mode after fit and load:
        moving it on every call cost half of a single-row score). On CPU in chunks whose scan
        states stay in cache: about ``CACHED_STATES`` values per expert (rows routed to it x
        the Mamba block's inner channels x ``d_state``)."""
        mamba = self.net.experts[0].mamba
        rows = CACHED_STATES * self.n_experts_ // (self.config.top_k * mamba.d_inner * mamba.d_state)
        chunk = int(np.clip(rows, 256, 4096)) if self.device.type == "cpu" else 4096
        return apply_batched(lambda xb: sum(net(xb)[0] for net in self.nets) / len(self.nets), X, self.device, batch_size=chunk)

    def _score(self, X: np.ndarray) -> np.ndarray:
        floor = getattr(self, "floor_", None)
        return self.logits(X) if floor is None else floor.score(X, self.logits(X))

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """The network's own P(anomaly | x) = sigmoid(logit); with the floor, the fused score on
        the quantile scale (``Floor.proba``)."""
        if getattr(self, "floor_", None) is not None:
            return self.floor_.proba(scores)
        return sigmoid(scores)

    def network_probability(self, X: np.ndarray) -> np.ndarray:
        """The network's own P(anomaly | x), with or without the floor: what a student fits
        (distillation). The floor's reading is a quantile (a typical normal row reads about 0.5),
        a ranking, not a probability to fit towards."""
        return sigmoid(self.logits(X))

    def _get_state(self) -> dict[str, Any]:
        state = detector_state(self.n_experts_, [module_state(net) for net in self.nets])
        if getattr(self, "floor_", None) is not None:
            state.update(self.floor_.state())
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        nets = [state["net"], *state.get("members", [])]
        if self.config.rank_features and "rank_knots" not in state["net"]:  # saved before rank features existed
            self.config = dataclasses.replace(self.config, rank_features=False)
        if self.config.knn_feature and "reference" not in state["net"]:  # saved before the neighbour distance existed
            self.config = dataclasses.replace(self.config, knn_feature=0)
        self.config = dataclasses.replace(self.config, members=len(nets))
        self._build(self.n_features_in_, int(state["n_experts"]))
        from rlad.algorithms.floor import Floor

        self.floor_ = Floor.from_state(state)
        for net, weights in zip(self.nets, nets):
            net.load_state_dict(weights)
            net.to(self.device).eval()
