"""Evaluation metrics."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def auc_scores(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC-ROC and AUC-PR (average precision) of anomaly scores against 0/1 labels."""
    return {"auc_roc": float(roc_auc_score(y_true, scores)), "auc_pr": float(average_precision_score(y_true, scores))}
