"""Partitions: face shards (dynamic, added as the corpus grows) and students (static)."""
import dagster as dg

from agedistill_core.corruptions import SEVERITIES, corruption_names

# Shard ids ("shard-00000", ...) are registered by the face_manifest asset.
shard_partitions = dg.DynamicPartitionsDefinition(name="shards")

# The five students of SPEC section 4 (the registry's names, in the paper's order).
STUDENT_ARCHS = ["vgg16", "senet50", "densenet121", "mn3_large", "mn3_small"]
student_partitions = dg.StaticPartitionsDefinition(STUDENT_ARCHS)

# LFW+C: corruption x severity (Dagster's multi-partitions allow exactly two dimensions).
lfwc_partitions = dg.MultiPartitionsDefinition({
    "corruption": dg.StaticPartitionsDefinition(corruption_names()),
    "severity": dg.StaticPartitionsDefinition([str(s) for s in SEVERITIES]),
})


def lfwc_key(corruption: str, severity: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"corruption": corruption, "severity": str(severity)})
