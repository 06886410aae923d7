"""Age groups and age bands, defined once: every family and report reads them from here.

* ``FAIRFACE_GROUPS`` / ``FAIRFACE_EDGES``: FairFace's 9 labelled groups (the data set's
  labels, the zero-shot group scores of evaluation, the group protocol of fine-tuning).
* ``ADIENCE_GROUPS`` / ``ADIENCE_BOUNDS``: Adience's 8 groups (SPEC 5).
* ``AGE_BANDS``: SPEC section 5's corpus bands (0-15 ... 61+), which describe a corpus (the label
  table's ``age_group``, its histogram), balance training (``students.balance: band``) and break
  evaluation down (``mae_0_15`` ... ``mae_61_plus``).  The last band ends at ``MAX_AGE`` (120):
  real ages above 100 exist (UTKFace goes to 116), and they were always counted in it.

Label tables written before the bands were defined here name the last band ``61-100``;
``band_of_label`` reads that name as today's ``61-120``, so stored tables and summaries still read.
"""
from __future__ import annotations

import numpy as np

FAIRFACE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
FAIRFACE_EDGES = (3, 10, 20, 30, 40, 50, 60, 70)  # lower bounds of groups 2..9

ADIENCE_GROUPS = ("0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+")
ADIENCE_BOUNDS = ((0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))

MAX_AGE = 120
AGE_BANDS = ((0, 15), (16, 25), (26, 35), (36, 45), (46, 60), (61, MAX_AGE))
# names the last band had in label tables written before MAX_AGE (read as today's)
LEGACY_BAND_LABELS = {"61-100": f"61-{MAX_AGE}"}


def age_to_group(ages, edges=FAIRFACE_EDGES) -> np.ndarray:
    """Group index of each age: ``edges`` are the lower bounds of groups 1, 2, ..."""
    return np.searchsorted(np.asarray(edges, np.float64), np.asarray(ages, np.float64), side="right")


def adience_edges() -> list[float]:
    """Edges for ``age_to_group`` over Adience's groups: an age between two groups goes to the
    nearer one (halfway across each gap)."""
    return [(hi + lo) / 2 for (_, hi), (lo, _) in zip(ADIENCE_BOUNDS[:-1], ADIENCE_BOUNDS[1:])]


def band_label(lo: int, hi: int) -> str:
    """``16-25``: a band's name in the label table and its summaries."""
    return f"{lo}-{hi}"


BAND_LABELS = tuple(band_label(lo, hi) for lo, hi in AGE_BANDS)


def band_column(lo: int, hi: int) -> str:
    """``mae_16_25`` (``mae_61_plus`` for the last, open band): a band's column in benchmark tables."""
    return f"mae_{lo}_{hi}" if hi < MAX_AGE else f"mae_{lo}_plus"


def band_of_label(label: str) -> str:
    """A band's name as stored (``61-100`` in older label tables) -> today's name."""
    return LEGACY_BAND_LABELS.get(label, label)


def age_band(ages) -> list[str]:
    """The band name of each age (rounded to the nearest year; above ``MAX_AGE`` counts as the last)."""
    edges = np.array([hi + 0.5 for _, hi in AGE_BANDS[:-1]])
    idx = np.searchsorted(edges, np.asarray(ages, np.float64))
    return [BAND_LABELS[i] for i in idx]


def in_band(ages, lo: int, hi: int) -> np.ndarray:
    """Which ages (whole years, as real ages are) fall in band ``lo``-``hi`` (the last band is open)."""
    ages = np.asarray(ages, np.float64)
    return (ages >= lo) & ((ages < hi + 1) if hi < MAX_AGE else np.isfinite(ages))
