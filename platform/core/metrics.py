"""Evaluation metrics."""
from __future__ import annotations

import numpy as np
from scipy.stats import wilcoxon
from sklearn.metrics import average_precision_score, roc_auc_score


def auc_scores(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC-ROC and AUC-PR (average precision) of anomaly scores against 0/1 labels."""
    return {"auc_roc": float(roc_auc_score(y_true, scores)), "auc_pr": float(average_precision_score(y_true, scores))}


def wtl_wilcoxon(a, b, tie: float = 0.001, min_differ: int = 1, min_pairs: int = 0,
                 decimals: int | None = None) -> tuple[str, float]:
    """W/T/L of ``a`` over ``b`` and the two-sided Wilcoxon p of ``a - b``: one definition for all benchmarks."""
    # tie: |a - b| <= tie, after rounding a - b to ``decimals`` when given; p: NaN with fewer than
    # ``min_pairs`` pairs or fewer than ``min_differ`` (rounded) differences not 0, else from the unrounded ones
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    c = d if decimals is None else np.round(d, decimals)
    wtl = f"{int((c > tie).sum())}/{int((abs(c) <= tie).sum())}/{int((c < -tie).sum())}"
    enough = len(d) >= min_pairs and np.count_nonzero(c) >= max(min_differ, 1)
    return wtl, float(wilcoxon(d).pvalue) if enough else float("nan")
