"""Materialise the whole asset graph, partition by partition, into a Dagster instance.

``python -m agedistill_dag.materialize [--profile demo]`` (what ``make demo``
runs) and the end-to-end test both use this.  Runs are recorded in
``$DAGSTER_HOME`` so that ``dagster dev`` afterwards shows the materialised graph.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import dagster as dg

from agedistill_core.errors import AgedistillError
from agedistill_core.evaluate.robustness import selected
from agedistill_core.pipeline import manifest_shards
from agedistill_dag.checks import vmage_checks
from agedistill_dag.definitions import all_assets
from agedistill_dag.partitions import lfwc_key
from agedistill_dag.resources import AgedistillConfig


# Dagster's console logger prints every engine event at DEBUG; keep INFO and up.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def materialize_all(profile: str | None = None, params: str | None = None,
                    instance: dg.DagsterInstance | None = None, archs: list[str] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, dg.ExecuteInJobResult]:
    """Run every asset in dependency order; returns the run result of each step."""
    config = AgedistillConfig(profile=profile, params=params)
    settings = config.settings()
    instance = instance or dg.DagsterInstance.get()
    graph = [*all_assets, vmage_checks]
    results: dict[str, dg.ExecuteInJobResult] = {}

    def run(step: str, selection: str, partition_key: str | None = None) -> None:
        log(f"materialising {step}")
        res = dg.materialize(graph, selection=selection, partition_key=partition_key, instance=instance,
                             resources={"config": config}, raise_on_error=True, run_config=QUIET)
        results[step] = res

    run("face_manifest", "face_manifest")
    for sid in manifest_shards(settings):
        run(f"face_crops+teacher_soft_labels[{sid}]", "key:face_crops or key:teacher_soft_labels", sid)
    run("vmage_table", "vmage_table")
    if settings.corruptions.enabled:
        for name, sev in selected(settings):
            run(f"lfwc_images[{name}|{sev}]", "lfwc_images", lfwc_key(name, sev))
    for arch in archs or settings.students.archs:
        run(f"student_checkpoints[{arch}]", "student_checkpoints", arch)
    run("benchmark_tables", "benchmark_tables")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile")
    p.add_argument("--params")
    args = p.parse_args(argv)
    try:
        materialize_all(args.profile, args.params)
        settings = AgedistillConfig(profile=args.profile, params=args.params).settings()
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((settings.benchmarks_dir / "benchmark.md").read_text())
    print(f"results in {settings.workdir} (label table: {settings.vmage_path}; "
          f"checkpoints: {settings.students_dir}; tables: {settings.benchmarks_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
