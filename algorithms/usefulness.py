"""Usefulness of synthetic anomalies: what a candidate set teaches the detector (issue 28).

Evasion (Swift Hydra's reward) picks samples the detector misses; those sit among normal rows,
and giving them weight hurt. Usefulness asks instead whether a candidate set *improves* the
detector on honest validation: a share of the training rows (:func:`honest_validation`,
``rlad.core.data.known_label_split``: held-out labelled anomalies against held-out unlabelled
rows; never test labels).

- :func:`reference_usefulness`, the reference: the change in validation AUC-PR after a short
  update (``update_steps`` SGD steps) of a copy of the detector on mini-batches of the training
  rows plus the candidates, against the *same* update (same batches, same seed) without them, so
  the update itself cancels out and only the candidates' effect is left.
- :class:`GradientAlignment`, a cheap proxy (learning-to-reweight style): the alignment of a
  candidate's loss gradient with the validation-loss gradient, at the detector's head (last
  layer, centred): ``(1 - p) * cos(h - c, -g_val)``, positive when a step on the candidate would lower the
  validation loss. One forward pass per batch of candidates: what PPO's env can afford per step.
- :class:`UsefulnessPool`: the reference on a pool of Ray actors, each holding a copy of the
  round's detector and rows, candidate sets spread over them (:func:`score_sets` in-process).
- :func:`gate`: a round is accepted only when validation does not get worse.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import ray
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from rlad.algorithms.mamba_moe import MambaMoEDetector, positive_weight
from rlad.core.data import known_label_split


@dataclass
class UsefulnessConfig:
    """The honest validation, the reference's short update, and how a pool scores."""

    val_share: float = 0.3  # share of labelled anomalies and of unlabelled rows held out (known_label_split)
    update_steps: int = 10  # SGD steps of the short update
    update_batch: int = 64  # real rows per step (every candidate of the set joins each step)
    update_lr: float = 0.05  # plain SGD: a fresh Adam's first steps have one size whatever the gradient
    candidate_weight: float = 1.0  # the candidates' mean loss weighs this much against the real rows' mean loss
    candidate_target: float = 1.0  # BCE target of a candidate (soft targets: below 1)
    repeats: int = 2  # short updates (seeds seed, seed + 1, ...) averaged: one alone is noisy
    set_size: int = 8  # candidates per set the reference scores
    max_sets: int = 8  # sets scored per round (selection="useful"): the best candidates by the env's reward
    workers: int = 0  # Ray actors scoring sets (0: in this process)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_share < 1.0:
            raise ValueError(f"val_share must be in (0, 1), got {self.val_share}")
        if not 0.0 < self.candidate_target <= 1.0:
            raise ValueError(f"candidate_target must be in (0, 1], got {self.candidate_target}")
        if min(self.update_steps, self.set_size, self.repeats, self.max_sets) < 1 or self.workers < 0:
            raise ValueError("update_steps, set_size and repeats must be >= 1, workers >= 0")


def honest_validation(y: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Fit and validation row indices of the training rows (labels ``y``: 1 labelled anomaly, 0
    unlabelled): :func:`rlad.core.data.known_label_split`, the one helper for this split."""
    return known_label_split(y, share, seed)


def validation_auc_pr(detector, X_val: np.ndarray, y_val: np.ndarray) -> float:
    """AUC-PR (average precision) of held-out labelled anomalies against held-out unlabelled rows."""
    return float(average_precision_score(y_val, detector.decision_function(X_val)))


def short_update(detector: MambaMoEDetector, X: np.ndarray, y: np.ndarray, candidates: np.ndarray | None,
                 cfg: UsefulnessConfig, seed: int = 0) -> MambaMoEDetector:
    """A copy of ``detector`` after ``cfg.update_steps`` SGD steps: each on ``update_batch`` real
    rows (drawn with ``seed``, so two calls see the same batches) plus every candidate (target
    ``candidate_target``, weight ``candidate_weight`` on their mean loss)."""
    det = copy.deepcopy(detector)
    pw = torch.tensor(positive_weight(y, det.config))
    Xt, yt = torch.tensor(np.asarray(X, np.float32)), torch.tensor(np.asarray(y, np.float32))  # copies: Ray hands actors read-only arrays
    cand = None if candidates is None or len(candidates) == 0 else torch.tensor(np.asarray(candidates, np.float32))
    for net in det.nets:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.update_lr)
        net.train()
        for _ in range(cfg.update_steps):
            rows = torch.randint(len(Xt), (min(cfg.update_batch, len(Xt)),), generator=gen)
            xb = Xt[rows] if cand is None else torch.cat([Xt[rows], cand])
            logits, balance = net(xb)
            loss = F.binary_cross_entropy_with_logits(logits[: len(rows)], yt[rows], pos_weight=pw)
            if cand is not None:  # no class weight: at weight 1 the set weighs about as much as one labelled anomaly
                target = torch.full((len(cand),), cfg.candidate_target)
                loss = loss + cfg.candidate_weight * F.binary_cross_entropy_with_logits(logits[len(rows):], target)
            loss = loss + det.config.balance_coef * balance
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
    return det


def reference_usefulness(detector: MambaMoEDetector, X: np.ndarray, y: np.ndarray, X_val: np.ndarray,
                         y_val: np.ndarray, sets: Sequence[np.ndarray], cfg: UsefulnessConfig,
                         seed: int = 0) -> np.ndarray:
    """Per candidate set: validation AUC-PR after the short update on ``(X, y)`` plus the set,
    minus the same after the same update without it; the mean over ``cfg.repeats`` seeds (a single
    update's batches moved the difference by several hundredths on a toy set)."""
    out = np.zeros(len(sets))
    for r in range(cfg.repeats):
        base = validation_auc_pr(short_update(detector, X, y, None, cfg, seed + r), X_val, y_val)
        out += [validation_auc_pr(short_update(detector, X, y, s, cfg, seed + r), X_val, y_val) - base for s in sets]
    return out / cfg.repeats


def split_sets(candidates: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive sets of ``size`` candidates (the last may be smaller)."""
    return [candidates[i:i + size] for i in range(0, len(candidates), size)]


class GradientAlignment:
    """The proxy: ``(1 - p) * cos(h - c, -g_val)`` per candidate, with ``h`` the detector's head
    input (the pooled expert output), ``p`` its P(anomaly), ``c`` the validation rows' mean ``h``
    and ``g_val`` the class-balanced validation-loss gradient of the head's weights on centred
    inputs. A step on a candidate (target 1) moves the head by ``(1 - p) h``; this is how much of
    that move lowers the validation loss. Centred and without the bias: a shift every row shares
    lowers the loss without changing any rank, so it says nothing about AUC-PR. Averaged over the
    detector's members; picklable: env runners hold a copy."""

    def __init__(self, detector: MambaMoEDetector, X_val: np.ndarray, y_val: np.ndarray) -> None:
        self.detector = detector
        self.directions, self.centres = [], []
        for net in detector.nets:
            h, p = self._features(net, X_val)
            centre = h.mean(0)
            # d(BCE)/d(logit): p - y; class-balanced mean over anomalies and over normal rows
            coef = np.where(y_val == 1, (p - 1.0) / max((y_val == 1).sum(), 1), p / max((y_val == 0).sum(), 1))
            g = (coef[:, None] * (h - centre)).sum(0)
            self.directions.append(-g / max(np.linalg.norm(g), 1e-12))
            self.centres.append(centre)

    @staticmethod
    @torch.no_grad()
    def _features(net, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head inputs ``h`` and P(anomaly) of ``X`` under one member network."""
        seen: list[torch.Tensor] = []
        hook = net.head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
        try:
            x = torch.from_numpy(np.asarray(X, np.float32))
            logits = net(torch.cat([x, x[:1]]) if len(x) == 1 else x)[0][: len(x)]  # batches of 1 skip the head
        finally:
            hook.remove()
        return seen[0][: len(x)].numpy().astype(np.float64), torch.sigmoid(logits).numpy().astype(np.float64)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros(len(X))
        for net, direction, centre in zip(self.detector.nets, self.directions, self.centres):
            h, p = self._features(net, X)
            h = h - centre
            cos = h @ direction / np.maximum(np.linalg.norm(h, axis=1), 1e-12)
            out += (1.0 - p) * cos
        return out / len(self.detector.nets)


def gate(before: float, after: float) -> bool:
    """A round is accepted only when validation does not get worse."""
    return after >= before


# -- the reference on Ray actors -------------------------------------------------------------------
class UsefulnessWorker:
    """Holds a copy of the round's detector and rows; scores candidate sets with the reference."""

    def __init__(self, cfg: UsefulnessConfig) -> None:
        torch.set_num_threads(1)
        self.cfg = cfg
        self.round = None

    def set_round(self, detector, X, y, X_val, y_val) -> None:
        self.round = (detector, *(np.array(v) for v in (X, y, X_val, y_val)))  # writable copies of Ray's read-only arrays

    def score(self, sets: list[np.ndarray], seed: int) -> np.ndarray:
        detector, X, y, X_val, y_val = self.round
        return reference_usefulness(detector, X, y, X_val, y_val, sets, self.cfg, seed)


class UsefulnessPool:
    """``cfg.workers`` Ray actors (1 CPU each) holding detector copies; :meth:`score` spreads the
    sets over them. Start Ray first (``rlad.core.ray_init.init_ray``, explicit CPUs)."""

    def __init__(self, cfg: UsefulnessConfig) -> None:
        if cfg.workers < 1:
            raise ValueError("UsefulnessPool needs workers >= 1 (workers=0: score_sets in-process)")
        actor = ray.remote(num_cpus=1)(UsefulnessWorker)
        self.cfg = cfg
        self.actors = [actor.remote(cfg) for _ in range(cfg.workers)]

    def set_round(self, detector, X, y, X_val, y_val) -> None:
        refs = [ray.put(v) for v in (detector, X, y, X_val, y_val)]  # one copy in the object store
        ray.get([a.set_round.remote(*refs) for a in self.actors])

    def score(self, sets: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
        """The reference per set; each actor takes a contiguous share (same seed: same baseline)."""
        shares = np.array_split(np.arange(len(sets)), len(self.actors))
        refs = [a.score.remote([sets[i] for i in idx], seed) for a, idx in zip(self.actors, shares) if len(idx)]
        return np.concatenate(ray.get(refs)) if refs else np.zeros(0)

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def score_sets(detector, X, y, X_val, y_val, sets: Sequence[np.ndarray], cfg: UsefulnessConfig,
               seed: int = 0, pool: UsefulnessPool | None = None) -> np.ndarray:
    """The reference per set, on ``pool`` when given (its round set by the caller), else here."""
    if pool is not None:
        return pool.score(sets, seed)
    return reference_usefulness(detector, X, y, X_val, y_val, sets, cfg, seed)
