"""Meta-learned robust autoencoder (Kumagai, Iwata, Takahashi and Fujiwara, "Meta-learning for
Robust Anomaly Detection", AISTATS 2023).

The paper's setting: meta-train on many labelled *source* tasks, then adapt in closed form, with
no gradient step, to an unseen *target* task of which only unlabelled, contaminated rows exist.

A task is an unlabelled, contaminated support set ``S`` and a clean labelled query set, disjoint
from ``S``. The model adapts to ``S`` in closed form:

* per-task scaling by the support set's own statistics (all a target has at adaptation time):
  ``scaling="standard"`` (default) centres each feature on its support mean and divides by its
  support standard deviation, floored at the mean standard deviation over features (a pixel that
  is rarely on must not dominate the squared residual), values clipped to ``[-10, 10]``;
  ``"minmax"`` maps the support's range to ``[0, 1]`` (ADBench's MinMax when ``S`` is the
  training rows), clipped to ``[-1, 2]``. The range of a 50-row meta-training support and of a
  300-row target differ; their mean and spread much less;
* task representation ``r = rho(mean_n phi(s_n))`` (deep sets over the support set);
* encoder ``h(x, r)`` (an MLP, plus a constant bias feature) and a task-specific LINEAR decoder
  ``W``, so the reconstruction is ``h(x, r) W``;
* anomalous attributes ``A`` (one vector per support row) keep anomalies out of the fit of
  ``W``, minimising ``||S - A - H W||^2 / N + lam ||W||^2 + (2 mu / N) |A|_1``;
* alternate, from ``A0 = g(s, r)`` (a network), ``n_alt_iters`` times: ridge regression
  ``W = (H'H / N + lam I)^-1 H'(S - A) / N``, then soft-thresholding ``A = soft(S - H W, mu)``;
  finish with one more ridge step. Every step is differentiable; ``lam`` and ``mu`` are
  meta-learned (softplus-positive).

Anomaly score of a row: its squared reconstruction error ``||x - h(x, r) W||^2`` under the
adapted decoder. :meth:`MetaRobustAEDetector.explain` returns a row's anomalous attributes,
``soft(x - h(x, r) W, mu)`` (the A-step's minimiser with ``W`` fixed), in scaled units.

Meta-training maximises a smoothed AUC on the query sets (mean over (anomaly, normal) pairs of
``sigmoid(score_anomaly - score_normal)``) with the model adapted to each task's support set.
Task augmentation (ours, not the paper's): a share ``feature_permutation`` of the training tasks
drawn from sources have their features in a random order, the same for support and query.
Default 0: within one domain family (the paper's setting, Mnist-r) a feature means the same in
every domain, which is what meta-training exploits; on Mnist-r's validation domains permuting
every task cost about ten points of AUC (``benchmarks/results/mnist_r_setting.csv``). Set it to 1
for sources whose features differ in meaning or whose anomalies differ from the target's (MVTec
categories, digit classes as tasks): there the networks otherwise memorise which features mark the
sources' anomalies (training AUC near 1, validation AUC falling towards chance,
``benchmarks/results/meta_rae_observations.csv``). Per-task mode never permutes.
Each step draws fresh tasks from one random source; every ``eval_every`` steps the hard AUC on
fixed tasks of held-out *validation* sources is checked, the best parameters are kept and training
stops after ``patience`` checks without improvement.

Tasks (:func:`sample_tasks`): ``K`` support rows of which a fraction ``U(min_contamination,
max_contamination)`` (0.1-0.5) are anomalies, ``J`` normal and ``I`` anomalous query rows, all
distinct rows. ``task_sizes`` picks ``(K, J, I)``: ``"full"`` (100, 50, 25) or ``"reduced"``
(50, 20, 10); the paper's own values could not be checked here, so these are ours. Sizes shrink to
what a small source holds (support and query stay disjoint); contamination is capped by the
anomalies left after the query's.

Two ways to fit:

* ``sources`` set (files or folders of labelled data sets of one feature width): ``fit(X, y)``
  meta-trains on them (once per process for a given source set and config; a source holding the
  rows of ``X`` is left out automatically), then adapts to the rows of ``X`` not labelled
  anomalous. :meth:`meta_fit` / :meth:`adapt` do the same steps explicitly.
* no ``sources`` (per-task mode, a single data set), ``per_task="auc"``: meta-trains on random
  sub-tasks of ``X`` itself and adapts to its unlabelled rows. Query "normals" are then unlabelled
  rows (a single task has no clean normals); anomalies are the labelled ones when there are
  ``min_labeled``, else pseudo-anomalies (the ``contamination`` share of rows the untrained model
  scores highest). Validation tasks come from a held-out ``val_fraction`` of the rows.
  ``per_task="robust"``: the paper's comparator, the same model without meta-training: the
  networks trained on the unlabelled rows by the adaptation's own robust objective.

A family of domains (the paper's protocol, :func:`split_domains`, :func:`domain_pools`,
:func:`target_tasks`, :meth:`MetaRobustAEDetector.meta_fit_domains`): files of one feature width
with a class per row; the target domain is held out, one domain validates, the rest are sources;
a task takes one class as normal and the others as anomalous; a target task's unlabelled support
has an anomaly ratio from 0.1 to 0.5 and its test rows are disjoint from the support.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rlad.algorithms.base import BaseDetector, check_array
from rlad.algorithms.torch_utils import apply_batched, mlp, module_state, resolve_device, seeded
from rlad.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlad.core.config import from_dict
from rlad.core.data import SUFFIXES, load_dataset, resolve_data
from rlad.core.metrics import auc_scores

#: ``(K, J, I)``: support rows, normal query rows, anomalous query rows per task.
TASK_SIZES: dict[str, tuple[int, int, int]] = {"full": (100, 50, 25), "reduced": (50, 20, 10)}
#: Per-task scaling: how scaled values are clipped (test rows far outside the support stay finite).
SCALINGS: dict[str, tuple[float, float]] = {"standard": (-10.0, 10.0), "minmax": (-1.0, 2.0)}
#: Per-task mode (no sources): what the networks learn from the target's rows alone.
PER_TASK: dict[str, str] = {
    "auc": "smoothed AUC on sub-tasks of the rows, labelled anomalies or else pseudo-anomalies",
    "robust": "the model without meta-training: its robust objective on the rows, lam and mu fixed",
}


@dataclass
class MetaRAEConfig:
    hidden_dim: int = 64
    latent_dim: int = 16  # width of h(x, r), the linear decoder's input (a bias feature is added)
    task_dim: int = 16  # deep-sets task representation
    n_alt_iters: int = 5  # alternating (W, A) updates
    init_ridge: float = 0.1  # lam, meta-learned
    init_threshold: float = 0.1  # mu, meta-learned
    lr: float = 1e-3
    tasks_per_step: int = 8
    max_steps: int = 3000  # meta-training steps at most
    eval_every: int = 50  # steps between validation checks
    patience: int = 6  # validation checks without improvement before stopping
    task_sizes: str = "full"  # a key of TASK_SIZES
    scaling: str = "standard"  # per-task feature scaling by the support: a key of SCALINGS
    feature_permutation: float = 0.0  # share of meta-training tasks (from sources) with features in a random order
    min_contamination: float = 0.1  # support anomaly share drawn from U(min, max)
    max_contamination: float = 0.5
    n_val_tasks: int = 16  # fixed validation tasks per validation source
    val_fraction: float = 0.2  # sources (or, per-task mode, rows) held out for validation
    sources: tuple[str, ...] = ()  # labelled data sets (files/folders) to meta-train on
    min_labeled: int = 5  # per-task mode "auc": fewer labelled anomalies than this -> pseudo-anomalies
    per_task: str = "auc"  # per-task mode (no sources): a key of PER_TASK
    per_task_steps: int = 300  # per-task mode "robust": gradient steps on the target's own rows
    max_support: int = 4096  # rows the fitted detector adapts to
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {sorted(SCALINGS)}, got {self.scaling!r}")
        if not 0.0 <= self.feature_permutation <= 1.0:
            raise ValueError(f"feature_permutation is a probability, got {self.feature_permutation}")
        if self.per_task not in PER_TASK:
            raise ValueError(f"per_task must be one of {sorted(PER_TASK)}, got {self.per_task!r}")
        if self.task_sizes not in TASK_SIZES:
            raise ValueError(f"task_sizes must be one of {sorted(TASK_SIZES)}, got {self.task_sizes!r}")
        if not 0.0 <= self.min_contamination <= self.max_contamination < 1.0:
            raise ValueError("need 0 <= min_contamination <= max_contamination < 1")
        if isinstance(self.sources, (str, os.PathLike)):
            self.sources = (str(self.sources),)
        self.sources = tuple(str(s) for s in self.sources)


# -- tasks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """Labelled rows of one task source: ``normal`` and ``anomalous`` (raw, unscaled)."""

    name: str
    normal: np.ndarray
    anomalous: np.ndarray


@dataclass(frozen=True)
class TaskSpec:
    """Task sizes ``(K, J, I)`` and the range of support contamination."""

    n_support: int = 100
    n_query: int = 50
    n_query_anomalies: int = 25
    min_contamination: float = 0.1
    max_contamination: float = 0.5

    @classmethod
    def of(cls, cfg: MetaRAEConfig) -> "TaskSpec":
        return cls(*TASK_SIZES[cfg.task_sizes], cfg.min_contamination, cfg.max_contamination)


@dataclass(frozen=True)
class TaskSet:
    """Equal-size tasks of one pool: unlabelled support sets ``(T, K, d)``, query sets
    ``(T, J + I, d)``, query labels ``(T, J + I)`` (1 = anomaly), support anomaly shares ``(T,)``."""

    support: np.ndarray
    query: np.ndarray
    query_y: np.ndarray
    contamination: np.ndarray


def task_sizes(spec: TaskSpec, n_normal: int, n_anomalous: int) -> tuple[int, int, int]:
    """``(K, J, I)`` shrunk to fit a pool so that support and query rows stay distinct."""
    if n_anomalous < 1 or n_normal < 3:
        raise ValueError(f"a task source needs >= 1 anomaly and >= 3 normal rows, got {n_anomalous} and {n_normal}")
    I = max(1, min(spec.n_query_anomalies, n_anomalous // 2))
    J = max(1, min(spec.n_query, n_normal // 3))
    K = min(spec.n_support, n_normal - J + _min_support_anomalies(spec, n_anomalous - I))
    return K, J, I


def _min_support_anomalies(spec: TaskSpec, available: int) -> int:
    return min(int(spec.min_contamination * spec.n_support), available)


def sample_tasks(pool: Pool, spec: TaskSpec, n_tasks: int, rng: np.random.Generator) -> TaskSet:
    """``n_tasks`` tasks from one pool: support and query drawn without overlap, the query clean
    and labelled, the support contaminated by a share ``U(min, max)`` of anomalies."""
    normal, anomalous = pool.normal, pool.anomalous
    K, J, I = task_sizes(spec, len(normal), len(anomalous))
    support, query, shares = [], [], []
    for _ in range(n_tasks):
        wanted = int(round(rng.uniform(spec.min_contamination, spec.max_contamination) * K))
        n_anom = max(min(wanted, len(anomalous) - I), K + J - len(normal))
        norm = normal[rng.permutation(len(normal))[: J + K - n_anom]]
        anom = anomalous[rng.permutation(len(anomalous))[: I + n_anom]]
        s = np.concatenate([norm[J:], anom[I:]])
        support.append(s[rng.permutation(K)])
        query.append(np.concatenate([norm[:J], anom[:I]]))
        shares.append(n_anom / K)
    query_y = np.r_[np.zeros(J), np.ones(I)].astype(np.int64)
    return TaskSet(np.stack(support).astype(np.float32), np.stack(query).astype(np.float32),
                   np.tile(query_y, (n_tasks, 1)), np.asarray(shares))


def pools_from_multiclass(X: np.ndarray, y_class: np.ndarray, classes: Sequence[int]) -> list[Pool]:
    """One pool per class in ``classes``: that class normal, the other ``classes`` anomalous."""
    X = np.asarray(X, dtype=np.float32)
    return [Pool(str(c), X[y_class == c], X[np.isin(y_class, [o for o in classes if o != c])]) for c in classes]


# -- task families of domains (the paper's protocol: Mnist-r) -------------------------------------
@dataclass(frozen=True)
class DomainSplit:
    """Domains of one family split into meta-training sources, early-stopping validation and one
    target (the paper: 4 / 1 / 1 of Mnist-r's six rotations)."""

    source: tuple[str, ...]
    validation: tuple[str, ...]
    target: str


def split_domains(domains: Sequence[str], target: str, seed: int, n_validation: int = 1) -> DomainSplit:
    """``target`` held out; of the others, ``n_validation`` drawn by ``seed`` validate, the rest are
    sources."""
    others = [d for d in domains if d != target]
    if target not in domains or len(others) < n_validation + 1:
        raise ValueError(f"need the target {target!r} among the domains and >= {n_validation + 1} others, got {list(domains)}")
    order = np.random.default_rng(seed).permutation(len(others))
    return DomainSplit(tuple(others[i] for i in sorted(order[n_validation:])),
                       tuple(others[i] for i in sorted(order[:n_validation])), target)


def domain_pools(name: str, X: np.ndarray, classes: np.ndarray) -> list[Pool]:
    """The tasks of one domain: one pool per class (that class normal, every other class
    anomalous), named ``domain:class``."""
    values = np.unique(classes)
    return [Pool(f"{name}:{p.name}", p.normal, p.anomalous) for p in pools_from_multiclass(X, classes, values.tolist())]


@dataclass(frozen=True)
class TargetTask:
    """One target task: the unlabelled, contaminated ``support`` the model adapts to, and labelled
    ``test`` rows (1 = anomaly) disjoint from it; row indices into the domain's rows kept."""

    normal_class: int
    ratio: float
    support: np.ndarray
    test: np.ndarray
    test_y: np.ndarray
    support_rows: np.ndarray
    test_rows: np.ndarray


#: The paper's anomaly ratios of a target's support set.
TARGET_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def target_tasks(X: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                 ratios: Sequence[float] = TARGET_RATIOS, support_share: float = 0.5) -> list[TargetTask]:
    """One task per class of a target domain: a ``support_share`` of the class's rows plus
    anomalies (other classes) making an anomaly ratio from ``ratios`` (each ratio as often as
    the class count allows, in a random order) form the support; every other row of the domain is
    a test row (the class's remaining rows normal, the rest anomalous)."""
    X = np.asarray(X, dtype=np.float32)
    values = np.unique(classes)
    drawn = np.resize(np.asarray(ratios, dtype=float), len(values))[rng.permutation(len(values))]
    tasks = []
    for c, ratio in zip(values, drawn):
        normal, anomalous = rng.permutation(np.flatnonzero(classes == c)), rng.permutation(np.flatnonzero(classes != c))
        n_normal = max(1, int(round(support_share * len(normal))))
        n_anomalous = min(int(round(ratio * n_normal / (1.0 - ratio))), len(anomalous) - 1)
        support = np.sort(np.r_[normal[:n_normal], anomalous[:n_anomalous]])
        test = np.sort(np.r_[normal[n_normal:], anomalous[n_anomalous:]])
        tasks.append(TargetTask(int(c), float(ratio), X[support], X[test], (classes[test] != c).astype(np.int64), support, test))
    return tasks


def target_aucs(scorer: Callable[[np.ndarray, np.ndarray], np.ndarray], tasks: Sequence[TargetTask]) -> list[float]:
    """Test AUC-ROC per target task of ``scorer(support, test) -> test scores``."""
    return [auc_scores(t.test_y, scorer(t.support, t.test))["auc_roc"] for t in tasks]


def source_files(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Data files named directly (or as ADBench names) or held by the given folders."""
    files: list[Path] = []
    for p in map(Path, sources):
        files.extend(sorted(f for f in p.iterdir() if f.suffix in SUFFIXES) if p.is_dir() else [resolve_data(p)])
    return files


def pools_from_files(files: Sequence[str | os.PathLike]) -> list[Pool]:
    """One pool per labelled data file; all must share one feature width."""
    datasets = [load_dataset(f) for f in files]
    widths = {ds.name: ds.n_features for ds in datasets}
    if len(set(widths.values())) != 1:
        raise ValueError(f"source data sets need one feature width, got {widths}")
    return [Pool(ds.name, ds.X[ds.y == 0], ds.X[ds.y == 1]) for ds in datasets]


def holds_rows(source: np.ndarray, X: np.ndarray, n_probe: int = 16) -> bool:
    """Whether ``X``'s rows are rows of ``source`` up to a per-feature affine map (such as the
    ADBench MinMax scaling of a split): probe rows are matched to their nearest source rows after
    standardising both, then each feature of the matches must be an exact affine image."""
    if source.shape[1] != X.shape[1] or len(X) < 3:
        return False
    z = lambda a: (a - a.mean(0)) / (a.std(0) + 1e-8)  # noqa: E731
    probe = X[np.linspace(0, len(X) - 1, min(n_probe, len(X))).astype(int)].astype(np.float64)
    zs, zp = z(source.astype(np.float64)), (probe - X.mean(0)) / (X.std(0) + 1e-8)
    match = source[np.argmin(((zp[:, None, :] - zs[None]) ** 2).sum(-1), axis=1)].astype(np.float64)
    dm, dp = match - match.mean(0), probe - probe.mean(0)
    slope = (dm * dp).sum(0) / np.maximum((dm**2).sum(0), 1e-12)
    err = np.abs(dp - slope * dm).max()
    return bool(err <= 1e-3 * max(np.abs(dp).max(), 1e-12))


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


def permute_features(S: torch.Tensor, Q: torch.Tensor, share: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each task of ``(S, Q)`` (support and query alike) has its features in a random order with
    probability ``share``: task augmentation against memorising the sources' features."""
    out_S, out_Q = S.clone(), Q.clone()
    for t in np.flatnonzero(rng.random(len(S)) < share):
        order = torch.from_numpy(rng.permutation(S.shape[-1])).to(S.device)
        out_S[t], out_Q[t] = S[t][:, order], Q[t][:, order]
    return out_S, out_Q


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


class Adapted(NamedTuple):
    """A model adapted to support sets: feature offset and span, task vector ``r``, decoder ``W``,
    support attributes ``A``."""

    low: torch.Tensor
    span: torch.Tensor
    r: torch.Tensor
    W: torch.Tensor
    A: torch.Tensor


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
        self.scaling = cfg.scaling

    @property
    def threshold(self) -> torch.Tensor:
        return nn.functional.softplus(self.raw_threshold)

    def _with_task(self, X: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.cat([X, r.unsqueeze(-2).expand(*X.shape[:-1], r.shape[-1])], dim=-1)

    def features(self, X: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``h(x, r)`` with a constant bias feature appended: ``(B, N, latent_dim + 1)``."""
        H = self.encoder(self._with_task(X, r))
        return torch.cat([H, torch.ones_like(H[..., :1])], dim=-1)

    def adapt(self, S: torch.Tensor) -> Adapted:
        """Closed-form robust fit to raw support sets ``S``."""
        if self.scaling == "standard":
            low, span = S.mean(dim=-2, keepdim=True), S.std(dim=-2, keepdim=True)
            span = span.clamp_min(span.mean(dim=-1, keepdim=True))  # a rarely-active feature cannot dominate
        else:
            low = S.amin(dim=-2, keepdim=True)
            span = S.amax(dim=-2, keepdim=True) - low
        span = torch.where(span > 0, span, torch.ones_like(span))
        S = (S - low) / span
        r = self.rho(self.phi(S).mean(dim=-2))
        H = self.features(S, r)
        A = self.init_attr(self._with_task(S, r))
        n, k = H.shape[-2], H.shape[-1]
        ridge = nn.functional.softplus(self.raw_ridge)
        gram = H.transpose(-1, -2) @ H / n + ridge * torch.eye(k, device=S.device)
        for _ in range(self.n_alt_iters):
            W = torch.linalg.solve(gram, H.transpose(-1, -2) @ (S - A) / n)
            A = soft_threshold(S - H @ W, self.threshold)
        W = torch.linalg.solve(gram, H.transpose(-1, -2) @ (S - A) / n)
        return Adapted(low, span, r, W, A)

    def robust_objective(self, S: torch.Tensor) -> torch.Tensor:
        """The objective the adaptation minimises, per task, at its result (raw support sets ``S``)."""
        a = self.adapt(S)
        S = (S - a.low) / a.span
        n = S.shape[-2]
        fit = (S - a.A - self.features(S, a.r) @ a.W).pow(2).sum(dim=(-1, -2)) / n
        ridge = nn.functional.softplus(self.raw_ridge) * a.W.pow(2).sum(dim=(-1, -2))
        return fit + ridge + 2.0 * self.threshold * a.A.abs().sum(dim=(-1, -2)) / n

    def residual(self, X: torch.Tensor, a: Adapted) -> torch.Tensor:
        """Reconstruction residual of raw rows ``X`` in the support's scaled units."""
        X = ((X - a.low) / a.span).clamp(*SCALINGS[self.scaling])
        return X - self.features(X, a.r) @ a.W


# -- meta-training cache (one meta-training per process per source set and config) ---------------
_META_CACHE: dict[str, dict[str, Any]] = {}


class MetaRobustAEDetector(BaseDetector):
    """Meta-learned robust autoencoder: ``meta_fit(pools, val_pools)`` then ``adapt(X)`` for a new
    task, or ``fit(X, y)`` (meta-training on ``config.sources``, or per-task mode without)."""

    Config = MetaRAEConfig
    kind = "meta_rae"

    def _build(self) -> None:
        self.device = resolve_device()
        self.net = MetaRAE(self.n_features_in_, self.config).to(self.device)

    # -- meta-training ---------------------------------------------------------------------------
    def meta_fit(self, pools: Sequence[Pool], val_pools: Sequence[Pool],
                 log: Callable[[str], None] | None = None) -> "MetaRobustAEDetector":
        """Meta-train on tasks of ``pools``, early-stopped on fixed tasks of ``val_pools``; call
        :meth:`adapt` before scoring. Sets ``history_`` (validation AUC per check),
        ``meta_val_auc_`` (the best) and ``meta_steps_`` (steps taken)."""
        self.n_features_in_ = pools[0].normal.shape[1]
        with seeded(self.config.seed) as rng:
            self._build()
            self._meta_train(pools, val_pools, rng, log)
        return self

    def meta_fit_domains(self, domains: dict[str, tuple[np.ndarray, np.ndarray]], split: DomainSplit,
                         log: Callable[[str], None] | None = None) -> "MetaRobustAEDetector":
        """:meth:`meta_fit` on a family of domains (name -> rows and their classes): every task
        of ``split.source`` to train on, those of ``split.validation`` to early-stop on; the
        target is never seen."""
        pools = [p for d in split.source for p in domain_pools(d, *domains[d])]
        val_pools = [p for d in split.validation for p in domain_pools(d, *domains[d])]
        if log:
            log(f"[meta-rae] meta-training on {len(pools)} tasks of {list(split.source)}, validating on "
                f"{len(val_pools)} of {list(split.validation)}; target {split.target}")
        self.train_sources_, self.val_sources_ = list(split.source), list(split.validation)
        return self.meta_fit(pools, val_pools, log)

    def meta_fit_sources(self, sources: Sequence[str | os.PathLike], exclude: np.ndarray | None = None,
                         log: Callable[[str], None] | None = None) -> "MetaRobustAEDetector":
        """:meth:`meta_fit` on labelled data files (or folders of them); a ``val_fraction`` of the
        sources (at least one) is held out for early stopping. A source that holds the rows of
        ``exclude`` (the target) is left out. Cached per process: the same sources and config
        meta-train once."""
        files = source_files(sources)
        pools = pools_from_files(files)
        self.excluded_sources_ = [p.name for p in pools if exclude is not None and holds_rows(np.r_[p.normal, p.anomalous], exclude)]
        pools = [p for p in pools if p.name not in self.excluded_sources_]
        if len(pools) < 2:
            raise ValueError(f"need at least 2 source data sets (one for validation), got {[p.name for p in pools]}")
        key = json.dumps({"sources": sorted(p.name for p in pools), "files": sorted(map(str, files)),
                          "config": {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("sources", "max_support")}})
        cached = _META_CACHE.get(key)
        if cached is None:
            order = np.random.default_rng(self.config.seed).permutation(len(pools))
            n_val = min(len(pools) - 1, max(1, round(self.config.val_fraction * len(pools))))
            val, train = [pools[i] for i in order[:n_val]], [pools[i] for i in order[n_val:]]
            if log:
                log(f"[meta-rae] meta-training on {[p.name for p in train]}, validating on {[p.name for p in val]}")
            self.meta_fit(train, val, log)
            cached = _META_CACHE[key] = {"net": module_state(self.net), "n_features": self.n_features_in_,
                                         "history": self.history_, "steps": self.meta_steps_, "val_auc": self.meta_val_auc_,
                                         "train": [p.name for p in train], "val": [p.name for p in val]}
        else:
            self.n_features_in_ = cached["n_features"]
            self._build()
            self.net.load_state_dict(cached["net"])
            self.history_, self.meta_steps_, self.meta_val_auc_ = cached["history"], cached["steps"], cached["val_auc"]
        self.train_sources_, self.val_sources_ = cached["train"], cached["val"]
        return self

    def _meta_train(self, pools: Sequence[Pool], val_pools: Sequence[Pool], rng: np.random.Generator,
                    log: Callable[[str], None] | None, permute: bool = True) -> None:
        cfg, spec = self.config, TaskSpec.of(self.config)
        val = [self._tensors(sample_tasks(p, spec, cfg.n_val_tasks, rng)) for p in val_pools]
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        best_auc, best_state, stale, step = -1.0, None, 0, 0
        self.history_: list[tuple[int, float]] = []
        for step in range(cfg.max_steps + 1):
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                with torch.no_grad():
                    auc = float(np.mean([pairwise_auc(self._task_scores(S, Q), Y, smooth=False).item() for S, Q, Y in val]))
                self.history_.append((step, auc))
                if log:
                    log(f"[meta-rae] step {step:5d}  validation AUC {auc:.4f}")
                if auc > best_auc:
                    best_auc, best_state, stale = auc, module_state(self.net), 0
                else:
                    stale += 1
                if stale >= cfg.patience or step == cfg.max_steps:
                    break
            S, Q, Y = self._tensors(sample_tasks(pools[rng.integers(len(pools))], spec, cfg.tasks_per_step, rng))
            if permute:
                S, Q = permute_features(S, Q, cfg.feature_permutation, rng)
            loss = -pairwise_auc(self._task_scores(S, Q), Y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net.load_state_dict(best_state)
        self.meta_val_auc_, self.meta_steps_ = best_auc, step

    def _tensors(self, tasks: TaskSet) -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(a, device=self.device) for a in (tasks.support, tasks.query, tasks.query_y))

    def _task_scores(self, S: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """Scores of query rows ``Q`` after closed-form adaptation to support sets ``S``."""
        return self.net.residual(Q, self.net.adapt(S)).pow(2).sum(dim=-1)

    # -- adaptation and scoring ------------------------------------------------------------------
    def adapt(self, X_support: Any) -> "MetaRobustAEDetector":
        """Closed-form adaptation to an unlabelled (possibly contaminated) support set; sets
        ``threshold_`` from the support rows' scores. No gradient steps."""
        if not hasattr(self, "net"):
            raise RuntimeError("MetaRobustAEDetector is not meta-trained: call meta_fit() or fit() first")
        X = check_array(X_support, self.n_features_in_)
        self._adapt(X)
        self._calibrate(X)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cfg = self.config
        unlabelled = X if y is None else X[y == 0]
        if cfg.sources:
            self.meta_fit_sources(cfg.sources, exclude=X)
        elif cfg.per_task == "robust":
            with seeded(cfg.seed):
                self._build()
                self._train_robust(unlabelled[: cfg.max_support])
        else:
            with seeded(cfg.seed) as rng:
                self._build()
                pools, val_pools = self._own_pools(X, y, unlabelled, rng)
                self._meta_train(pools, val_pools, rng, None, permute=False)  # one task: its features are the target's
        rng = np.random.default_rng(cfg.seed)
        support = unlabelled if len(unlabelled) <= cfg.max_support else unlabelled[rng.choice(len(unlabelled), cfg.max_support, replace=False)]
        self._adapt(support)

    def _train_robust(self, rows: np.ndarray) -> None:
        """The paper's per-task comparator: the same networks trained on one task's unlabelled rows
        by the adaptation's own objective ``||S - A - HW||^2 / N + lam ||W||^2 + (2 mu / N) |A|_1``
        (``lam``, ``mu`` at their initial values: minimised freely, ``mu`` would go to 0)."""
        S = torch.as_tensor(rows, device=self.device).unsqueeze(0)
        params = [p for n, p in self.net.named_parameters() if not n.startswith("raw_")]
        opt = torch.optim.Adam(params, lr=self.config.lr)
        for _ in range(self.config.per_task_steps):
            loss = self.net.robust_objective(S).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.history_, self.meta_val_auc_, self.meta_steps_ = [], float("nan"), self.config.per_task_steps

    def _own_pools(self, X: np.ndarray, y: np.ndarray | None, unlabelled: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[Pool], list[Pool]]:
        """Per-task mode: train and validation pools from disjoint rows of one data set."""
        if y is not None and y.sum() >= self.config.min_labeled:
            normal, anomalous = unlabelled, X[y == 1]
        else:
            self._adapt(unlabelled[: self.config.max_support])
            order = np.argsort(self._score(unlabelled))
            n_anomalous = max(2, int(self.contamination * len(order)))
            normal, anomalous = unlabelled[order[:-n_anomalous]], unlabelled[order[-n_anomalous:]]
        parts = []
        for rows in (normal, anomalous):
            perm = rng.permutation(len(rows))
            n_val = max(1, int(self.config.val_fraction * len(rows)))
            parts.append((rows[perm[n_val:]], rows[perm[:n_val]]))
        (n_tr, n_va), (a_tr, a_va) = parts
        return [Pool("train", n_tr, a_tr)], [Pool("val", n_va, a_va)]

    @torch.no_grad()
    def _adapt(self, support: np.ndarray) -> None:
        a = self.net.adapt(torch.as_tensor(support, device=self.device).unsqueeze(0))
        self.adapted_ = Adapted(*(t[0] for t in a[:4]), None)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.residual(x, self.adapted_)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return apply_batched(lambda x: self._residual(x).pow(2).sum(dim=-1), X, self.device)

    def explain(self, X: Any) -> np.ndarray:
        """Anomalous attributes ``(n, d)`` of rows under the adapted decoder (in the support's
        scaled units): large entries mark the features that make a row anomalous."""
        self._check_fitted()
        X = check_array(X, self.n_features_in_)
        return apply_batched(lambda x: soft_threshold(self._residual(x), self.net.threshold), X, self.device)

    # -- persistence -----------------------------------------------------------------------------
    def save_meta(self, path: str | os.PathLike) -> Path:
        """Write the meta-trained networks alone (no adaptation yet): :meth:`load` returns a
        detector to :meth:`adapt` to any target of the same width."""
        meta = {"contamination": self.contamination, "n_features_in": self.n_features_in_,
                "history": self.history_, "val_auc": self.meta_val_auc_, "steps": self.meta_steps_}
        return save_checkpoint(path, self.kind, {"model": dataclasses.asdict(self.config), "meta": meta}, {"net": module_state(self.net)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MetaRobustAEDetector":
        """An adapted detector, or a meta-trained one written by :meth:`save_meta`."""
        _, config, state = load_checkpoint(path, expected_kind=cls.kind)
        if "adapted" in state:
            return super().load(path)
        try:
            meta = config["meta"]
            det = cls(from_dict(cls.Config, config["model"]), contamination=meta["contamination"])
            det.n_features_in_ = meta["n_features_in"]
            det.history_, det.meta_val_auc_, det.meta_steps_ = meta["history"], meta["val_auc"], meta["steps"]
            det._build()
            det.net.load_state_dict(state["net"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} does not match {cls.__name__}: {exc}") from exc
        return det

    def _get_state(self) -> dict[str, Any]:
        return {"net": module_state(self.net), "adapted": [t.cpu() for t in self.adapted_[:4]]}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._build()
        self.net.load_state_dict(state["net"])
        self.adapted_ = Adapted(*(t.to(self.device) for t in state["adapted"]), None)
