"""DVC and Dagster agree on what is stale.

Both come from the stage table: dvc.yaml's ``params`` from the settings sections each stage
reads (wherever params.yaml sets them), Dagster's code versions from the same sections.
A DVC project in a temporary folder runs the first four stages on real faces; Dagster
records the same outputs (every stage finds them up to date).  Then a change to the
*profile's own* ``faces`` override makes exactly ``crops`` stale for both, and once crops
are redone, exactly ``label`` -- one step at a time, as both tools propagate staleness.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from agedistill_core.dvcyaml import render
from agedistill_core.pipeline import STAGE, stage_keys
from agedistill_core.settings import load_settings
from agedistill_dag.definitions import build_definitions
from agedistill_dag.profile import Profile
from agedistill_testing import REPO, UTKFACE, needs_utkface, write_params

BIN = REPO / ".venv" / "bin"
FIRST = ["manifest", "crops", "label", "vmage"]
pytestmark = [needs_utkface,
              pytest.mark.skipif(not (BIN / "dvc").is_file(), reason=f"needs dvc in {BIN} (make install)")]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGEDISTILL_", "DVC_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1")
    return env


def dvc(project: Path, *args: str) -> str:
    r = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"dvc {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r.stdout


def dvc_stale(project: Path) -> set[str]:
    """Stages `dvc status` reports as changed, among the first four."""
    status = yaml.safe_load(dvc(project, "status", "--json", "--with-deps", "vmage")) or {}
    return {name for name in status if name in FIRST}


def write(project: Path, crop_size: int) -> Path:
    params = write_params(project, {"f": {
        "shard_size": 3, "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": 5},
        "faces": {"detector": "none", "align": "none", "crop_size": crop_size},
        "teacher": {"variants": 1, "threads": 1}}}, default="f")
    doc = yaml.safe_load(params.read_text())
    doc["dvc"] = {"profile": "f"}
    params.write_text(yaml.safe_dump(doc))
    (project / "dvc.yaml").write_text(render(load_settings("f", params)))
    return params


class Dagster:
    def __init__(self, params: Path, instance: dg.DagsterInstance):
        self.p = Profile.load("f", str(params))
        self.defs = build_definitions(self.p)
        self.instance = instance

    def materialize(self, stage: str) -> None:
        for key in stage_keys(self.p.settings, stage):
            dg.materialize([*self.defs.assets, *self.defs.asset_checks], instance=self.instance,
                           selection=[self.p.key(STAGE[stage].asset)], partition_key=key,
                           resources={"config": self.p.config()})

    def stale(self) -> set[str]:
        resolver = CachingStaleStatusResolver(self.instance, self.defs.resolve_asset_graph(),
                                              LoadingContextForTest(self.instance))
        return {st for st in FIRST for key in stage_keys(self.p.settings, st)
                if resolver.get_status(self.p.key(STAGE[st].asset), key) != StaleStatus.FRESH}


def test_a_profile_override_change_is_stale_in_dvc_and_dagster_alike(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    # dvc.yaml's code dependencies are paths in the repository: give the project a copy
    shutil.copytree(REPO / "agedistill_core", project / "agedistill_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = write(project, crop_size=112)
    dvc(project, "init", "--no-scm", "-q")
    dvc(project, "repro", "vmage")
    assert dvc_stale(project) == set()

    instance = dg.DagsterInstance.ephemeral()
    dag = Dagster(params, instance)
    for st in FIRST:
        dag.materialize(st)          # every stage finds DVC's outputs up to date and records their versions
    assert dag.stale() == set()

    params = write(project, crop_size=96)    # the profile's own faces override, not base.faces
    dag = Dagster(params, instance)
    assert dvc_stale(project) == {"crops"}
    assert dag.stale() == {"crops"}

    dvc(project, "repro", "--single-item", "crops")
    dag.materialize("crops")
    assert dvc_stale(project) == {"label"}
    assert dag.stale() == {"label"}
