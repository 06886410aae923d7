"""Partitions shared by every profile: students' architectures and LFW+C's corruption x severity.

The per-profile ones (the dynamic shard partitions ``shards_<profile>`` and the student
runs, keyed by run name) are built in ``agedistill_dag.profile.Profile``.
"""
import dagster as dg

from agedistill_core.corruptions import SEVERITIES, corruption_names

# The five students of SPEC section 4 (the registry's names, in the paper's order).
STUDENT_ARCHS = ["vgg16", "senet50", "densenet121", "mn3_large", "mn3_small"]

# LFW+C: corruption x severity (Dagster's multi-partitions allow exactly two dimensions).
# Static, so nothing of it is stored in the instance: the profile's key prefix keeps profiles apart.
lfwc_partitions = dg.MultiPartitionsDefinition({
    "corruption": dg.StaticPartitionsDefinition(corruption_names()),
    "severity": dg.StaticPartitionsDefinition([str(s) for s in SEVERITIES]),
})


def lfwc_key(corruption: str, severity: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"corruption": corruption, "severity": str(severity)})
