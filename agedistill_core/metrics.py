"""The metrics of SPEC section 5: MAE, LAP epsilon-error, top-1 and 1-off group accuracy.

A low module (the teacher's measurements, training's validation, fine-tuning and evaluation
all score with these); the groups and bands they are applied to are in ``ages``.
"""
from __future__ import annotations

import numpy as np


def mae(pred, target) -> float:
    """Mean absolute error over the pairs where both are known (nan if none)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ok = np.isfinite(pred) & np.isfinite(target)
    return float(np.abs(pred[ok] - target[ok]).mean()) if ok.any() else float("nan")


def epsilon_error(pred, mean, std) -> float:
    """LAP epsilon-error: mean of 1 - exp(-(a - m)^2 / (2 s^2)) (lower is better).

    A face whose voters all agreed (s = 0) scores 0 when hit exactly, else 1.
    """
    pred, mean, std = (np.asarray(v, np.float64) for v in (pred, mean, std))
    d2 = (pred - mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, d2 / (2 * np.maximum(std, 1e-300) ** 2), np.where(d2 == 0, 0.0, np.inf))
    return float((1 - np.exp(-z)).mean()) if z.size else float("nan")


def group_accuracy(pred_group, true_group) -> tuple[float, float]:
    """Top-1 and 1-off accuracy (a prediction one group away counts for 1-off)."""
    p, t = np.asarray(pred_group), np.asarray(true_group)
    if len(t) == 0:
        return float("nan"), float("nan")
    return float((p == t).mean()), float((np.abs(p - t) <= 1).mean())
