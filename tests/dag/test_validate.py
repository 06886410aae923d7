"""`dagster definitions validate` (what a deployment runs before serving the code location) passes
on the repository's workspace.yaml, for the default profile and for a corpus experiment."""
from __future__ import annotations

import os
import subprocess

import pytest

from agedistill_dag.materialize import INSTANCE_YAML
from agedistill_testing import REPO

DAGSTER = REPO / ".venv" / "bin" / "dagster"


@pytest.mark.skipif(not DAGSTER.is_file(), reason=f"needs {DAGSTER} (make install)")
@pytest.mark.parametrize("profile", ["demo", "corpus_gt"])
def test_definitions_validate(tmp_path, profile):
    (tmp_path / "dagster.yaml").write_text(INSTANCE_YAML)   # what make demo writes
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEDISTILL_")}
    env.update(DAGSTER_HOME=str(tmp_path), AGEDISTILL_PROFILE=profile)
    r = subprocess.run([str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "All code locations passed validation" in r.stdout + r.stderr


@pytest.mark.skipif(not DAGSTER.is_file(), reason=f"needs {DAGSTER} (make install)")
def test_definitions_validate_fails_on_an_unknown_profile(tmp_path):
    (tmp_path / "dagster.yaml").write_text(INSTANCE_YAML)   # what make demo writes
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEDISTILL_")}
    env.update(DAGSTER_HOME=str(tmp_path), AGEDISTILL_PROFILE="no_such_profile")
    r = subprocess.run([str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "unknown profile 'no_such_profile'" in r.stdout + r.stderr
