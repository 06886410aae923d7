"""Test helpers shared by every test folder: where the real face data is, temporary params files.

(Not named conftest: several test folders have their own conftest.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
UTKFACE = SHARED_DATA / "utkface" / "crop_part1"
FAIRFACE = SHARED_DATA / "fairface"

needs_utkface = pytest.mark.skipif(
    not UTKFACE.is_dir(), reason=f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
needs_fairface = pytest.mark.skipif(
    not FAIRFACE.is_dir(), reason=f"needs real faces in ../shared/data/fairface ({FAIRFACE} missing)")


def write_params(folder: Path, profiles: dict, base: dict | None = None, default: str | None = None) -> Path:
    """Write a params.yaml with ``base`` (the repo's own by default) and ``profiles``."""
    repo_params = yaml.safe_load((REPO / "params.yaml").read_text())
    doc = {"base": repo_params["base"] if base is None else base, "profiles": profiles}
    if default:
        doc["default_profile"] = default
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


