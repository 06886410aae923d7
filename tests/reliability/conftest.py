"""Fixtures for the bad-input / fault tests (helpers: rel_helpers.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rel_helpers import FAULT_HOOK, N_FACES, load, make_params, real_faces


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory) -> Path:
    """A folder with 20 real UTKFace faces (shared by every test: same data root, same versions)."""
    root = tmp_path_factory.mktemp("faces")
    for f in real_faces(N_FACES):
        shutil.copy(f, root / f.name)
    return root


@pytest.fixture
def tiny(tmp_path, faces_dir):
    """Factory: (params path, settings) of the tiny profile in a fresh workdir."""
    def make(name: str = "a", root: Path | None = None, **over):
        params = make_params(tmp_path / name, tmp_path / name / "work", root or faces_dir, **over)
        return params, load(params)
    return make


@pytest.fixture(scope="session")
def reference(tmp_path_factory, faces_dir) -> Path:
    """The workdir of one uninterrupted run (manifest crops label vmage lfwc) of the tiny profile."""
    from agedistill_core import stages
    from agedistill_core.datasets import build_manifest

    folder = tmp_path_factory.mktemp("reference")
    settings = load(make_params(folder, folder / "work", faces_dir))
    build_manifest(settings)
    stages.run_crops(settings)
    stages.run_labels(settings)
    stages.run_vmage(settings)
    stages.run_lfwc(settings)
    return settings.workdir


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory) -> Path:
    """A sitecustomize that SIGKILLs the process when a chosen file is renamed into place
    (``AGEDISTILL_TEST_KILL=before:labels/shard-00002.parquet`` or ``after:...``)."""
    folder = tmp_path_factory.mktemp("fault")
    (folder / "sitecustomize.py").write_text(FAULT_HOOK)
    return folder


