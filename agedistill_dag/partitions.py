"""Partitions: face shards (dynamic, added as the corpus grows) and students (static)."""
import dagster as dg

# Shard ids ("shard-00000", ...) are registered by the face_manifest asset.
shard_partitions = dg.DynamicPartitionsDefinition(name="shards")

# The five students of SPEC section 4 (the registry's names, in the paper's order).
STUDENT_ARCHS = ["vgg16", "senet50", "densenet121", "mn3_large", "mn3_small"]
student_partitions = dg.StaticPartitionsDefinition(STUDENT_ARCHS)
