"""Dataset adapters: each turns a data root into rows of the one manifest schema.

Add a data set by writing one module that registers a scanner in ``DATASETS``
and importing it below.
"""
from agedistill_core.datasets.base import DATASETS, MANIFEST_SCHEMA, build_manifest, scan_dataset
from agedistill_core.datasets import adience, appa_real, demo, fairface, folder, imdb_wiki, lfw, utkface  # noqa: F401  (registration)

__all__ = ["DATASETS", "MANIFEST_SCHEMA", "build_manifest", "scan_dataset"]
