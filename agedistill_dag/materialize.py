"""Materialise the whole asset graph of one profile, partition by partition, into a Dagster instance.

``python -m agedistill_dag.materialize [--profile demo]`` (what ``make demo``
runs) and the end-to-end test both use this.  Runs are recorded in
``$DAGSTER_HOME`` so that ``dagster dev`` afterwards shows the materialised graph.
Every stage skips work whose version is unchanged, so a second run is quick.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import dagster as dg

from agedistill_core.errors import AgedistillError
from agedistill_core.corruptions.lfwc import selected
from agedistill_core.pipeline import manifest_shards
from agedistill_core.students.train import run_name
from agedistill_dag.definitions import build_definitions
from agedistill_dag.partitions import lfwc_key
from agedistill_dag.profile import Profile


# Dagster's console logger prints every engine event at DEBUG; keep INFO and up.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def materialize_all(profile: str | None = None, params: str | None = None,
                    instance: dg.DagsterInstance | None = None, archs: list[str] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, dg.ExecuteInProcessResult]:
    """Run every asset in dependency order; returns the run result of each step."""
    p = Profile.load(profile, params)
    settings = p.settings
    defs = build_definitions(p)
    graph = [*defs.assets, *defs.asset_checks]
    resources = {"config": p.config()}
    instance = instance or dg.DagsterInstance.get()
    results: dict[str, dg.ExecuteInProcessResult] = {}

    def run(step: str, assets: list[str], partition_key: str | None = None) -> None:
        log(f"materialising {step}")
        selection = dg.AssetSelection.assets(*(p.key(a) for a in assets))
        results[step] = dg.materialize(graph, selection=selection, partition_key=partition_key, instance=instance,
                                       resources=resources, raise_on_error=True, run_config=QUIET)

    run(f"{p.prefix}/face_manifest", ["face_manifest"])
    for sid in manifest_shards(settings):
        run(f"{p.prefix}/face_crops+teacher_soft_labels[{sid}]", ["face_crops", "teacher_soft_labels"], sid)
    run(f"{p.prefix}/vmage_table", ["vmage_table"])
    if settings.corruptions.enabled:
        for name, sev in selected(settings):
            run(f"{p.prefix}/lfwc_images[{name}|{sev}]", ["lfwc_images"], lfwc_key(name, sev))
    for arch in archs or settings.students.archs:
        key = run_name(settings, arch)
        run(f"{p.prefix}/student_checkpoints[{key}]", ["student_checkpoints"], key)
    run(f"{p.prefix}/benchmark_tables", ["benchmark_tables"])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile")
    p.add_argument("--params")
    args = p.parse_args(argv)
    try:
        materialize_all(args.profile, args.params)
        settings = Profile.load(args.profile, args.params).settings
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((settings.benchmarks_dir / "benchmark.md").read_text())
    print(f"results in {settings.workdir} (label table: {settings.vmage_path}; "
          f"checkpoints: {settings.students_dir}; tables: {settings.benchmarks_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
