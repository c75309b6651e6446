"""Meta-learned robust autoencoder (Kumagai, Iwata, Takahashi and Fujiwara, "Meta-learning for
Robust Anomaly Detection", AISTATS 2023).

A task is an unlabelled, possibly contaminated support set ``S`` and a labelled query set. The
model adapts to ``S`` in closed form:

* task representation ``r = rho(mean_n phi(s_n))`` (deep sets over the support set);
* encoder ``h(x, r)`` (an MLP, plus a constant bias feature) and a task-specific LINEAR decoder
  ``W``, so the reconstruction is ``h(x, r) W``;
* anomalous attributes ``A`` (one vector per support row) keep anomalies out of the fit of
  ``W``, minimising ``||S - A - H W||^2 / N + lam ||W||^2 + (2 mu / N) |A|_1``;
* alternate, from ``A0 = g(s, r)`` (a network), ``n_alt_iters`` times: ridge regression
  ``W = (H'H / N + lam I)^-1 H'(S - A) / N``, then soft-thresholding ``A = soft(S - H W, mu)``;
  finish with one more ridge step. Every step is differentiable; ``lam`` and ``mu`` are
  meta-learned (softplus-positive).

Anomaly score of a row: its squared reconstruction error ``||x - h(x, r) W||^2`` (summed over
features) under the adapted decoder, the AE score the paper uses as we read it; ``A`` only
robustifies adaptation (it is defined for support rows), so its norm is not the score.
:meth:`MetaRobustAEDetector.explain` returns a row's anomalous attributes under the adapted
decoder, ``soft(x - h(x, r) W, mu)``: the A-step's exact minimiser with ``W`` fixed.

Meta-training maximises a smoothed AUC on the query sets, the mean over (anomaly, normal) pairs of
``sigmoid(score_anomaly - score_normal)``, with the model adapted to each task's support set.
Test-time adaptation to a new unlabelled support set is the same closed form: no gradient steps.

Task sources:

* :func:`tasks_from_multiclass`: one class normal, the other listed classes anomalous (e.g.
  scikit-learn digits; meta-train and meta-test on disjoint class sets).
* :func:`tasks_from_adbench`: labelled ADBench files as source tasks. They must share one
  feature width; ADBench files mostly differ, and mixing widths raises ``ValueError`` (no
  padding or projection is invented here).
* ``fit(X, y)`` on one dataset (the usual case, and the answer to differing widths): meta-trains
  on random sub-tasks of ``X`` itself. Normal pool: unlabelled rows (``y == 0``, contaminated as
  they come). Anomaly pool: the labelled anomalies (``y == 1``) when there are at least
  ``min_labeled``; else pseudo-anomalies, the ``contamination`` fraction of unlabelled rows that
  the not yet meta-trained robust AE (random encoder, closed-form robust decoder) scores highest,
  the rest being the normal pool. Synthetic anomalies (rows with some features redrawn
  uniformly, from other rows, pushed outwards or noised) were tried instead and taught the model
  the wrong anomalies: test AUC on ADBench cardio, thyroid and breastw fell well below that of
  the untrained model, down to below chance. The detector then adapts to the unlabelled rows
  (at most ``max_support``).

With ``val_tasks``, :meth:`MetaRobustAEDetector.meta_fit` keeps the parameters of the best mean
AUC on those meta-validation tasks (checked every ``eval_every`` steps): with few source classes
meta-training overfits them. Digits, meta-trained on 0-4, tested on 7-9: mean AUC 0.97
early-stopped on 5-6, 0.89 after 300 steps without, 0.92-0.94 with no meta-training at all.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.preprocessing import MinMaxScaler
from torch import nn

from rlad.algorithms.base import BaseDetector, check_array
from rlad.algorithms.torch_utils import apply_batched, resolve_device, mlp, module_state, seeded
from rlad.platform.core.data import load_dataset


@dataclass
class MetaRAEConfig:
    hidden_dim: int = 64
    latent_dim: int = 16  # width of h(x, r), the linear decoder's input (a bias feature is added)
    task_dim: int = 16  # deep-sets task representation
    n_alt_iters: int = 5  # alternating (W, A) updates
    init_ridge: float = 0.1  # lam, meta-learned
    init_threshold: float = 0.1  # mu, meta-learned
    meta_steps: int = 300
    tasks_per_step: int = 8
    lr: float = 1e-3
    # sub-tasks that fit(X, y) draws from X
    n_tasks: int = 256
    n_support: int = 128
    n_query: int = 64  # normal query rows per task
    n_query_anomalies: int = 16
    max_contamination: float = 0.1  # support anomaly fraction drawn from U(0, this)
    min_labeled: int = 5  # fewer labelled anomalies than this: pseudo-anomalies instead
    max_support: int = 4096  # unlabelled rows the fitted detector adapts to
    eval_every: int = 25  # meta-validation period of meta_fit(tasks, val_tasks)
    seed: int = 0


# -- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSet:
    """Equal-size tasks stacked for batching: unlabelled support sets ``(T, Ns, d)``, query sets
    ``(T, Nq, d)`` and query labels ``(T, Nq)`` (1 = anomaly)."""

    support: np.ndarray
    query: np.ndarray
    query_y: np.ndarray


@dataclass(frozen=True)
class TaskSpec:
    """Sizes of sampled tasks; each support set holds a fraction ``U(0, max_contamination)`` of
    anomalies, each query set ``n_query`` normal and ``n_query_anomalies`` anomalous rows."""

    n_tasks: int = 256
    n_support: int = 128
    n_query: int = 64
    n_query_anomalies: int = 16
    max_contamination: float = 0.1


def _take(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct rows of ``pool`` when it has enough, else drawn with replacement."""
    return pool[rng.choice(len(pool), size=n, replace=len(pool) < n)]


def sample_tasks(pools: Sequence[tuple[np.ndarray, np.ndarray]], spec: TaskSpec, rng: np.random.Generator) -> TaskSet:
    """Draw ``spec.n_tasks`` tasks, each from a random ``(normal rows, anomalous rows)`` pool."""
    support, query = [], []
    for _ in range(spec.n_tasks):
        normal, anomalous = pools[rng.integers(len(pools))]
        n_anom = int(round(rng.uniform(0.0, spec.max_contamination) * spec.n_support))
        norm = _take(normal, spec.n_support - n_anom + spec.n_query, rng)
        anom = _take(anomalous, n_anom + spec.n_query_anomalies, rng)
        s = np.concatenate([norm[spec.n_query :], anom[spec.n_query_anomalies :]])
        support.append(s[rng.permutation(len(s))])
        query.append(np.concatenate([norm[: spec.n_query], anom[: spec.n_query_anomalies]]))
    query_y = np.r_[np.zeros(spec.n_query), np.ones(spec.n_query_anomalies)].astype(np.int64)
    return TaskSet(np.stack(support).astype(np.float32), np.stack(query).astype(np.float32), np.tile(query_y, (spec.n_tasks, 1)))


def tasks_from_multiclass(X: np.ndarray, y_class: np.ndarray, classes: Sequence[int], spec: TaskSpec = TaskSpec(), seed: int = 0) -> TaskSet:
    """Tasks where one of ``classes`` is normal and the other ``classes`` are anomalous. Use
    disjoint ``classes`` for meta-training and meta-test."""
    X = np.asarray(X, dtype=np.float32)
    pools = [(X[y_class == c], X[np.isin(y_class, [o for o in classes if o != c])]) for c in classes]
    return sample_tasks(pools, spec, np.random.default_rng(seed))


def tasks_from_adbench(paths: Sequence[str | os.PathLike], spec: TaskSpec = TaskSpec(), seed: int = 0) -> TaskSet:
    """Tasks from labelled ADBench files (each min-max scaled on its own), all of one width."""
    datasets = [load_dataset(p) for p in paths]
    widths = {ds.name: ds.n_features for ds in datasets}
    if len(set(widths.values())) != 1:
        raise ValueError(
            f"tasks need one feature width, got {widths}; to meta-train for one dataset, call "
            "MetaRobustAEDetector.fit on its training split (random sub-tasks of that dataset)"
        )
    pools = []
    for ds in datasets:
        X = MinMaxScaler().fit_transform(ds.X).astype(np.float32)
        pools.append((X[ds.y == 0], X[ds.y == 1]))
    return sample_tasks(pools, spec, np.random.default_rng(seed))


def tasks_from_dataset(normal: np.ndarray, anomalous: np.ndarray, cfg: MetaRAEConfig, rng: np.random.Generator) -> TaskSet:
    """Random sub-tasks of one dataset's normal and anomalous pools, sized by ``cfg``."""
    spec = TaskSpec(cfg.n_tasks, cfg.n_support, cfg.n_query, cfg.n_query_anomalies, cfg.max_contamination)
    return sample_tasks([(normal, anomalous)], spec, rng)


# -- model --------------------------------------------------------------------------------------
def soft_threshold(v: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Proximal operator of ``mu * |.|_1``."""
    return torch.sign(v) * torch.relu(v.abs() - mu)


def pairwise_auc(scores: torch.Tensor, y: torch.Tensor, smooth: bool = True) -> torch.Tensor:
    """Mean over the (anomaly, normal) pairs of tasks ``(B, N)`` of ``sigmoid(s_anomaly - s_normal)``
    (the smoothed AUC), or of ``s_anomaly > s_normal`` (the AUC) when not ``smooth``."""
    pairs = y.unsqueeze(-1).float() * (1.0 - y.unsqueeze(-2).float())
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    wins = torch.sigmoid(diff) if smooth else (diff > 0).float()
    return (wins * pairs).sum() / pairs.sum()


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


class MetaRAE(nn.Module):
    """Task encoder, encoder ``h``, initial-attribute net ``g`` and the meta-learned ``lam``, ``mu``.
    Works on batches of tasks: rows ``(B, N, d)``."""

    def __init__(self, n_features: int, cfg: MetaRAEConfig) -> None:
        super().__init__()
        d, hid, t = n_features, cfg.hidden_dim, cfg.task_dim
        self.phi = mlp([d, hid, hid])
        self.rho = mlp([hid, hid, t])
        self.encoder = mlp([d + t, hid, hid, cfg.latent_dim])
        self.init_attr = mlp([d + t, hid, d])
        self.raw_ridge = nn.Parameter(torch.tensor(_inv_softplus(cfg.init_ridge)))
        self.raw_threshold = nn.Parameter(torch.tensor(_inv_softplus(cfg.init_threshold)))
        self.n_alt_iters = cfg.n_alt_iters

    @property
    def threshold(self) -> torch.Tensor:
        return nn.functional.softplus(self.raw_threshold)

    def task_repr(self, S: torch.Tensor) -> torch.Tensor:
        return self.rho(self.phi(S).mean(dim=-2))

    def _with_task(self, X: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.cat([X, r.unsqueeze(-2).expand(*X.shape[:-1], r.shape[-1])], dim=-1)

    def features(self, X: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``h(x, r)`` with a constant bias feature appended: ``(B, N, latent_dim + 1)``."""
        H = self.encoder(self._with_task(X, r))
        return torch.cat([H, torch.ones_like(H[..., :1])], dim=-1)

    def adapt(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closed-form robust fit to support sets ``S``: returns ``(r, W, A)``."""
        r = self.task_repr(S)
        H = self.features(S, r)
        A = self.init_attr(self._with_task(S, r))
        n, k = H.shape[-2], H.shape[-1]
        ridge = nn.functional.softplus(self.raw_ridge)
        gram = H.transpose(-1, -2) @ H / n + ridge * torch.eye(k, device=S.device)
        for _ in range(self.n_alt_iters):
            W = torch.linalg.solve(gram, H.transpose(-1, -2) @ (S - A) / n)
            A = soft_threshold(S - H @ W, self.threshold)
        W = torch.linalg.solve(gram, H.transpose(-1, -2) @ (S - A) / n)
        return r, W, A

    def residual(self, X: torch.Tensor, r: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return X - self.features(X, r) @ W


class MetaRobustAEDetector(BaseDetector):
    """Meta-learned robust autoencoder. ``fit(X, y)`` meta-trains on sub-tasks of ``X`` and adapts
    to its unlabelled rows; or ``meta_fit(tasks)`` then ``adapt(X_support)`` for a new task."""

    Config = MetaRAEConfig
    kind = "meta_rae"

    def _build(self) -> None:
        self.device = resolve_device()
        self.net = MetaRAE(self.n_features_in_, self.config).to(self.device)

    def meta_fit(self, tasks: TaskSet, val_tasks: TaskSet | None = None) -> "MetaRobustAEDetector":
        """Meta-train on labelled tasks, early-stopped on ``val_tasks`` when given; call
        :meth:`adapt` before scoring."""
        self.n_features_in_ = tasks.support.shape[-1]
        with seeded(self.config.seed) as rng:
            self._build()
            self._meta_train(tasks, rng, val_tasks)
        return self

    def adapt(self, X_support: Any) -> "MetaRobustAEDetector":
        """Closed-form adaptation to an unlabelled (possibly contaminated) support set; sets
        ``threshold_`` from the support rows' scores."""
        X = check_array(X_support, self.n_features_in_)
        self._adapt(X)
        self._calibrate(X)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cfg = self.config
        unlabelled = X if y is None else X[y == 0]
        with seeded(cfg.seed) as rng:
            self._build()
            support = unlabelled
            if len(support) > cfg.max_support:
                support = support[rng.choice(len(support), size=cfg.max_support, replace=False)]
            if y is not None and y.sum() >= cfg.min_labeled:
                normal, anomalous = unlabelled, X[y == 1]
            else:
                self._adapt(support)
                order = np.argsort(self._score(unlabelled))
                n_anomalous = max(1, int(self.contamination * len(order)))
                normal, anomalous = unlabelled[order[:-n_anomalous]], unlabelled[order[-n_anomalous:]]
            self._meta_train(tasks_from_dataset(normal, anomalous, cfg, rng), rng)
        self._adapt(support)

    def _meta_train(self, tasks: TaskSet, rng: np.random.Generator, val_tasks: TaskSet | None = None) -> None:
        cfg = self.config
        S, Q, Y = self._tensors(tasks)
        val = None if val_tasks is None else self._tensors(val_tasks)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        best_auc, best_state = -1.0, None
        for step in range(cfg.meta_steps + 1):
            if val is not None and step % cfg.eval_every == 0:
                with torch.no_grad():
                    auc = pairwise_auc(self._task_scores(val[0], val[1]), val[2], smooth=False).item()
                if auc > best_auc:
                    best_auc, best_state = auc, module_state(self.net)
            if step == cfg.meta_steps:
                break
            idx = torch.as_tensor(rng.choice(len(S), size=min(cfg.tasks_per_step, len(S)), replace=False), device=self.device)
            loss = -pairwise_auc(self._task_scores(S[idx], Q[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if best_state is not None:
            self.net.load_state_dict(best_state)

    def _tensors(self, tasks: TaskSet) -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(a, device=self.device) for a in (tasks.support, tasks.query, tasks.query_y))

    def _task_scores(self, S: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """Scores of query rows ``Q`` after closed-form adaptation to support sets ``S``."""
        r, W, _ = self.net.adapt(S)
        return self.net.residual(Q, r, W).pow(2).sum(dim=-1)

    @torch.no_grad()
    def _adapt(self, support: np.ndarray) -> None:
        r, W, _ = self.net.adapt(torch.as_tensor(support, device=self.device).unsqueeze(0))
        self.task_repr_, self.decoder_ = r[0], W[0]

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.residual(x, self.task_repr_, self.decoder_)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return apply_batched(lambda x: self._residual(x).pow(2).sum(dim=-1), X, self.device)

    def explain(self, X: Any) -> np.ndarray:
        """Anomalous attributes ``(n, d)`` of rows under the adapted decoder: large entries mark
        the features that make a row anomalous."""
        self._check_fitted()
        X = check_array(X, self.n_features_in_)
        return apply_batched(lambda x: soft_threshold(self._residual(x), self.net.threshold), X, self.device)

    def _get_state(self) -> dict[str, Any]:
        return {"net": module_state(self.net), "task_repr": self.task_repr_.cpu(), "decoder": self.decoder_.cpu()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._build()
        self.net.load_state_dict(state["net"])
        self.task_repr_ = state["task_repr"].to(self.device)
        self.decoder_ = state["decoder"].to(self.device)
