"""Unsupervised floor for a label-driven detector (issue 37).

Labelled anomalies teach a network their own type; anomalies of a type nobody has labelled yet
can score as normal. The floor fuses the network's score with an IForest fitted on all training
rows (labels unused), so a detector ranks isolated rows high even when the labels do not show them.

Fusion: each score is mapped to its quantile among the unlabelled training rows (rank
calibration: the two scales become comparable; beyond the training range the map continues
linearly, so extreme rows keep their order), each quantile to its tail score ``-log(1 - q)``
(:func:`tail`), then ``(1 - w) * t_net + w * t_iforest``. Tail scores, not the quantiles
themselves (issue 28, "no collapse"): on a linear quantile scale the top of the network's ranking
(anomalies at q 0.99) and the bulk of normal rows (q 0.8-0.95) are close, so an IForest that is
no better than chance where they sit lifts many normal rows above the anomalies at w 0.3. That cost
the default detector half its AUC-PR on cover and up to 0.24 on skin at 5,000 rows; on the tail
scale a row must be rare for a detector to be lifted by it
(``benchmarks/results/floor_rules_dev.csv``, confirmed in ``floor_fusion.csv``).

Cascade (the default fusion, issue 37): no single weight serves both kinds of anomaly. The rows
the network puts in its top ``1 - CONFIDENT`` of the unlabelled rows come first, ordered by the
tail fusion at the weight; every other row follows, ordered by the tail fusion at
``BELOW_WEIGHT`` (0.5). The top grows beyond 15% where more unlabelled rows score like the
labelled anomalies (:func:`top_share_start`; ``floor_cascade_share_dev.csv``). The network keeps
the top of the ranking, where AUC-PR is decided and the labelled types sit; below it, where the
network cannot tell an unlabelled type from normal rows, the IForest weighs more (0.85 and 0.5
chosen on seeds 0-2 as the best held-out-type AUC-ROC that keeps the usual split's AUC-PR and
AUC-ROC within 0.01 of the tail fusion's: ``benchmarks/results/floor_cascade_dev.csv``). Both are
the defaults of a dial (``MambaMoEConfig.floor_confident``, ``floor_below``); no setting of it meets
issue 37's two targets together on the development seeds (``floor_frontier_dev.csv``).

Weight ``w`` (when not given), by leave-one-type-out among the labelled anomalies: they fall into
two k-means clusters ("types"); for each, a one-network copy of the detector is trained without
that cluster, without a share of the other cluster and without a share of the unlabelled rows.
For each candidate ``w``: the held-out type's AUC against the held-out unlabelled rows, and the
ordinary validation AUC (the other cluster's held-out anomalies against the same rows). Among the
weights whose ordinary validation error ``1 - AUC`` is at most ``TOLERANCE`` (relative) above the
best weight's, the one with the best held-out-type AUC wins: the weight moves towards the IForest
when held-out types are missed, as long as the seen type does not pay for it. The tolerance is
relative because a fixed 0.02 of AUC is a few more errors at AUC 0.8 but a quarter more at 0.93,
where it let skin's weight rise to 0.2-0.4 and its AUC-PR fall 0.1-0.2. With fewer than
``MIN_ANOMALIES`` labelled anomalies (too few to cluster and validate), ``DEFAULT_WEIGHT``: 0.2
(chosen on seeds 0-2 at 1,000 rows on the 12 development sets, where it beat 0.1 on AUC-PR and on
its seed-to-seed spread, and tied 0.1 at 5,000 rows: ``floor_default_weight_dev.csv``). Before
that it was 0.1, and 0.3 earlier still, which on the tail scale cost pendigits and cover at 5,000
rows.

One labelled anomaly (issue 34): one row cannot show a type, and a network fitted to it learns one
row's direction; its top rows hold normal rows above the anomalies an IForest isolates (WBC and
satimage-2, on both seed ranges). Every row is then ordered by the tail fusion at
``ONE_LABEL_WEIGHT`` (0.5) instead of the cascade, unless a weight is given
(chosen on seeds 0-2, confirmed on 3-5: ``floor_one_label.csv``).
"""
from __future__ import annotations

import pickle
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

KNOTS = 256
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
DEFAULT_WEIGHT = 0.2
TOLERANCE = 0.1  # relative: a weight may raise the ordinary validation error 1 - AUC by 10% at most
MIN_ANOMALIES = 8
ONE_LABEL_WEIGHT = 0.5  # with a single labelled anomaly (and no weight given): the tail fusion at this weight, every row
CONFIDENT = 0.85  # cascade: network quantiles from here up keep the network's ranking on top (at most)
LABELLED_LOW = 0.1  # cascade: the top also holds every unlabelled row scored like the labelled anomalies' lowest tenth
BELOW_WEIGHT = 0.5  # cascade: the IForest's weight in the tail fusion of every other row
FITTED_FUSIONS = ("cascade", "tail")  # what a config may ask a new floor for
FUSIONS = (*FITTED_FUSIONS, "linear")  # "linear" only loads (detectors saved before issue 28)
HELD_UNLABELLED = 0.2  # share of unlabelled rows each fold holds out
HELD_SEEN = 0.25  # share of the other cluster's anomalies each fold holds out (ordinary validation)


def quantile_knots(scores: np.ndarray) -> np.ndarray:
    return np.quantile(np.asarray(scores, np.float64), np.linspace(0.0, 1.0, KNOTS))


def calibrate(scores: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Quantile of each score among the knots' rows, in [0, 1] inside their range, continued
    linearly (by the range's width) outside it so that order is kept."""
    s = np.asarray(scores, np.float64)
    lo, hi = float(knots[0]), float(knots[-1])
    width = max(hi - lo, 1e-12)
    q = np.interp(s, knots, np.linspace(0.0, 1.0, len(knots)))
    return q + np.clip(s - hi, 0.0, None) / width - np.clip(lo - s, 0.0, None) / width


TAIL_EPS = 0.5 / KNOTS  # where tail() turns linear: half a knot below the top of the training range


def tail(q: np.ndarray) -> np.ndarray:
    """Tail score ``-log(1 - q)`` of a calibrated quantile (``q`` 0.9 -> 2.3, 0.99 -> 4.6), continued
    linearly with the same slope above ``1 - TAIL_EPS`` and below 0, so that it is finite and keeps
    the order of rows beyond the training range."""
    q = np.asarray(q, np.float64)
    top = 1.0 - TAIL_EPS
    t = -np.log1p(-np.clip(q, 0.0, top))
    return t + np.clip(q - top, 0.0, None) / TAIL_EPS + np.clip(q, None, 0.0)


def untail(t: np.ndarray) -> np.ndarray:
    """The quantile of a fused tail score, ``1 - exp(-t)``, in [0, 1] (a probability-like value)."""
    return 1.0 - np.exp(-np.clip(np.asarray(t, np.float64), 0.0, None))


def fuse(q_net: np.ndarray, q_free: np.ndarray, weight: float, fusion: str = "tail") -> np.ndarray:
    """``(1 - w) * tail(q_net) + w * tail(q_free)``; ``fusion="linear"``: the quantiles themselves
    (detectors saved before issue 28 score so). The cascade orders rows by this fusion in two parts
    (:func:`cascade`, with its fitted threshold: ``Floor.score``)."""
    if fusion == "linear":
        return (1.0 - weight) * q_net + weight * q_free
    return (1.0 - weight) * tail(q_net) + weight * tail(q_free)


def cascade(q_net: np.ndarray, q_free: np.ndarray, weight: float, confident: float = CONFIDENT,
            below: float = BELOW_WEIGHT) -> np.ndarray:
    """Rows the network puts in its top ``1 - confident`` of the unlabelled rows first, ordered by
    the tail fusion at ``weight``; below them every other row, ordered by the tail fusion at
    ``below`` (the IForest's larger share).

    Why: AUC-PR lives at the top of the ranking, where the network recognises the labelled types;
    a type nobody labelled sits lower in the network's ranking, where the IForest tells it from
    normal rows better than the network (issue 37). On a tail-like scale, so that :func:`untail`
    reads ``>= confident`` exactly for the network's confident rows: the top scores
    ``T + max(fused, 0)``, the rest ``T * (1 - exp(-fused_below))`` (below ``T``), ``T = tail(confident)``."""
    q_net = np.asarray(q_net, np.float64)
    t_conf = float(tail(np.array(confident)))
    top = t_conf + np.maximum(fuse(q_net, q_free, weight), 0.0)
    rest = t_conf * -np.expm1(-fuse(q_net, q_free, below))
    return np.where(q_net >= confident, top, rest)


def top_share_start(net_scores: np.ndarray, y: np.ndarray, confident: float = CONFIDENT) -> float:
    """The cascade's threshold on the network's quantile: ``confident``, lowered so that the top also
    holds the unlabelled rows the network scores at least like the lowest ``LABELLED_LOW`` of the
    labelled anomalies (in-sample). Why: where a fifth of the rows are anomalies (skin, satellite),
    a fixed top 15% cannot hold the labelled types' unlabelled anomalies, and the ones below it
    lose their network ranking."""
    net_scores, y = np.asarray(net_scores, np.float64), np.asarray(y)
    unlabelled, labelled = net_scores[y == 0], net_scores[y == 1]
    if labelled.size == 0 or unlabelled.size == 0:
        return confident
    share = float(np.mean(unlabelled >= np.quantile(labelled, LABELLED_LOW)))
    return min(confident, 1.0 - share)


def select_weight(held: np.ndarray, seen: np.ndarray, tolerance: float = TOLERANCE) -> int:
    """Index into ``WEIGHTS``: among the weights whose ordinary validation error ``1 - seen`` is at
    most ``tolerance`` (relative) above the best weight's, the one with the best held-out-type AUC."""
    ok = np.flatnonzero(1.0 - seen <= (1.0 - seen.max()) * (1.0 + tolerance) + 1e-12)
    return int(ok[np.argmax(held[ok])])


class Floor:
    """A fitted IForest, the knots of both scores on the unlabelled rows, and the weight.

    ``confident`` and ``below`` are the cascade's two settings (its top threshold before
    :func:`top_share_start` lowers it, and the IForest's weight below the top): the defaults keep the
    labelled types' AUC-PR; a team hunting types nobody labelled raises both
    (``MambaMoEConfig.floor_confident``, ``floor_below``; ``floor_frontier_dev.csv``)."""

    def __init__(self, seed: int = 0, fusion: str = "cascade", confident: float = CONFIDENT,
                 below: float = BELOW_WEIGHT) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"floor fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
        self.seed = seed
        self.model = None
        self.net_knots = self.free_knots = None
        self.weight = DEFAULT_WEIGHT
        self.fusion = fusion
        self.top_at = self.confident = float(confident)
        self.below = float(below)
        self.choice: dict[str, object] = {}

    def free_score(self, X: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(X)

    def fit(self, X: np.ndarray, y: np.ndarray, net_scores: np.ndarray, weight: float | None,
            fold_scorer: Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]] | None) -> "Floor":
        """``X``, ``y`` the real training rows and labels; ``net_scores`` the network's scores of
        ``X``; ``fold_scorer(X_fold, y_fold, seed)`` trains a one-network copy and returns its
        scoring function (for the weight's choice)."""
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=100, random_state=self.seed).fit(X)
        unl = y == 0
        free = self.free_score(X)
        self.net_knots, self.free_knots = quantile_knots(net_scores[unl]), quantile_knots(free[unl])
        self.confident = top_share_start(net_scores, y, self.top_at)
        if weight is not None:
            self.weight, self.choice = float(weight), {"rule": "given"}
        elif int(np.sum(y == 1)) == 1:  # one row cannot show a type: no cascade on its network's top
            self.weight, self.fusion, self.choice = ONE_LABEL_WEIGHT, "tail", {"rule": "one labelled anomaly"}
        else:
            self.weight, self.choice = self.choose_weight(X, y, free, fold_scorer)
        return self

    def choose_weight(self, X, y, free, fold_scorer) -> tuple[float, dict[str, object]]:
        anomalies = np.flatnonzero(y == 1)
        if fold_scorer is None or anomalies.size < MIN_ANOMALIES:
            return DEFAULT_WEIGHT, {"rule": "default", "anomalies": int(anomalies.size)}
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(self.seed)
        types = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(X[anomalies])
        unlabelled = rng.permutation(np.flatnonzero(y == 0))
        held_u = unlabelled[: max(2, int(HELD_UNLABELLED * unlabelled.size))]
        held_aucs, seen_aucs = [], []
        for t in (0, 1):
            held_type, other = anomalies[types == t], rng.permutation(anomalies[types != t])
            n_seen = int(round(HELD_SEEN * other.size))
            if held_type.size < 2 or n_seen < 2 or other.size - n_seen < 2:
                continue
            held_seen = other[:n_seen]
            train = np.setdiff1d(np.arange(len(y)), np.concatenate([held_type, held_seen, held_u]))
            score = fold_scorer(X[train], y[train], self.seed + 1 + t)
            knots = quantile_knots(score(X[train][y[train] == 0]))
            free_knots = quantile_knots(free[train][y[train] == 0])
            rows = {"type": np.concatenate([held_type, held_u]), "seen": np.concatenate([held_seen, held_u])}
            aucs = {}
            for key, r in rows.items():
                qn, qf = calibrate(score(X[r]), knots), calibrate(free[r], free_knots)
                aucs[key] = [roc_auc_score(y[r], fuse(qn, qf, w)) for w in WEIGHTS]
            held_aucs.append(aucs["type"])
            seen_aucs.append(aucs["seen"])
        if not held_aucs:
            return DEFAULT_WEIGHT, {"rule": "default", "anomalies": int(anomalies.size)}
        held, seen = np.mean(held_aucs, 0), np.mean(seen_aucs, 0)
        best = select_weight(held, seen)
        return float(WEIGHTS[best]), {"rule": "leave-one-type-out", "held_type_auc": held.round(4).tolist(),
                                      "seen_auc": seen.round(4).tolist(), "weights": list(WEIGHTS)}

    def describe(self) -> str:
        """What the fitted floor does, in one line (``rlad fit`` prints it): a user sees which rule
        set the IForest's weight and whether the cascade keeps the network's top."""
        why = {"given": "as configured", "default": f"the default below {MIN_ANOMALIES} labelled anomalies",
               "leave-one-type-out": "chosen by leave-one-type-out",
               "one labelled anomaly": "one labelled anomaly cannot show a type"}.get(str(self.choice.get("rule")))
        why = f" ({why})" if why else ""
        if self.fusion == "cascade":
            return (f"the network's top {1 - self.confident:.0%} of rows first, at IForest weight {self.weight:g}{why}; "
                    f"every other row at IForest weight {self.below:g}")
        return f"every row by the {self.fusion} fusion at IForest weight {self.weight:g}{why}"

    def score(self, X: np.ndarray, net_scores: np.ndarray) -> np.ndarray:
        qn, qf = calibrate(net_scores, self.net_knots), calibrate(self.free_score(X), self.free_knots)
        if self.fusion == "cascade":
            return cascade(qn, qf, self.weight, self.confident, self.below)
        return fuse(qn, qf, self.weight, self.fusion)

    def proba(self, scores: np.ndarray) -> np.ndarray:
        """Fused scores -> [0, 1]: the quantile scale (clipped), the tail score mapped back by
        :func:`untail`."""
        return np.clip(scores, 0.0, 1.0) if self.fusion == "linear" else untail(scores)

    def state(self) -> dict[str, object]:
        return {"floor_model": pickle.dumps(self.model), "floor_net_knots": self.net_knots.tolist(),
                "floor_free_knots": self.free_knots.tolist(), "floor_weight": float(self.weight),
                "floor_fusion": self.fusion, "floor_confident": float(self.confident), "floor_below": self.below}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> "Floor | None":
        if "floor_model" not in state:
            return None
        floor = cls()
        floor.model = pickle.loads(state["floor_model"])
        floor.net_knots = np.asarray(state["floor_net_knots"], np.float64)
        floor.free_knots = np.asarray(state["floor_free_knots"], np.float64)
        floor.weight = float(state["floor_weight"])
        floor.fusion = str(state.get("floor_fusion", "linear"))  # saved before issue 28: linear quantiles
        floor.confident = float(state.get("floor_confident", CONFIDENT))
        floor.below = float(state.get("floor_below", BELOW_WEIGHT))  # saved before the setting existed
        return floor
