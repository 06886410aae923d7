"""Root fixtures (helpers live in agedistill_testing.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from agedistill_testing import UTKFACE, write_params


@pytest.fixture
def utk_params(tmp_path: Path) -> Path:
    """A profile over 300 real UTKFace faces (fixed-seed sample), one short epoch."""
    return write_params(tmp_path, {"utk": {
        "workdir": str(tmp_path / "work"),
        "shard_size": 128,
        "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": 300},
        "faces": {"detector": "none", "crop_size": 112},
        "students": {"archs": ["mn3_small"], "epochs": 1, "batch_size": 32, "augment": True},
        "corruptions": {"names": ["defocus_blur", "jpeg"], "severities": [1, 5], "max_faces": 40},
    }})

