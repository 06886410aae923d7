"""The metrics of SPEC section 5."""
from __future__ import annotations

import numpy as np

FAIRFACE_EDGES = (3, 10, 20, 30, 40, 50, 60, 70)  # lower bounds of groups 2..9
FAIRFACE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")


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


def age_to_group(ages, edges=FAIRFACE_EDGES) -> np.ndarray:
    """Group index of each age: ``edges`` are the lower bounds of groups 1, 2, ..."""
    return np.searchsorted(np.asarray(edges, np.float64), np.asarray(ages, np.float64), side="right")


def group_accuracy(pred_group, true_group) -> tuple[float, float]:
    """Top-1 and 1-off accuracy (a prediction one group away counts for 1-off)."""
    p, t = np.asarray(pred_group), np.asarray(true_group)
    if len(t) == 0:
        return float("nan"), float("nan")
    return float((p == t).mean()), float((np.abs(p - t) <= 1).mean())


# SPEC section 5: the groups used to describe a corpus
SPEC_GROUPS = ((0, 15), (16, 25), (26, 35), (36, 45), (46, 60), (61, 100))


def group_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def age_group(ages: np.ndarray) -> list[str]:
    edges = np.array([hi + 0.5 for _, hi in SPEC_GROUPS[:-1]])
    idx = np.searchsorted(edges, np.asarray(ages, np.float64))
    labels = [group_label(*g) for g in SPEC_GROUPS]
    return [labels[i] for i in idx]
