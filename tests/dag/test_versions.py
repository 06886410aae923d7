"""Versions Dagster can see: code versions from the settings each stage reads, data versions
from what the stage wrote; a re-run with unchanged settings skips the work and keeps the
data version; changing `faces` makes face_crops stale, then what is downstream of it."""
import dagster as dg
import numpy as np
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from agedistill_core.images import encode_jpeg
from agedistill_core.pipeline import settings_version, stage_version
from agedistill_core.shards import shard_path
from agedistill_dag.definitions import build_definitions
from agedistill_dag.profile import Profile
from agedistill_testing import write_params

SHARDS = ["shard-00000", "shard-00001"]


def _params(tmp_path, crop_size: int):
    root = tmp_path / "imgs"
    if not root.is_dir():
        root.mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            (root / f"{i}.jpg").write_bytes(encode_jpeg(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)))
    return str(write_params(tmp_path, {"f": {
        "workdir": str(tmp_path / "w"), "shard_size": 2, "dataset": {"name": "folder", "root": str(root)},
        "faces": {"detector": "none", "align": "none", "crop_size": crop_size}}}))


class Graph:
    """The definitions of profile `f` as params.yaml is now, over one instance."""

    def __init__(self, params: str, instance: dg.DagsterInstance):
        self.p = Profile.load("f", params)
        self.defs = build_definitions(self.p)
        self.instance = instance

    def materialize(self, names: list[str], partition: str | None = None) -> dict:
        """Materialise; returns {(asset, partition): materialisation} of this run."""
        result = dg.materialize([*self.defs.assets, *self.defs.asset_checks], instance=self.instance,
                                selection=[self.p.key(n) for n in names], partition_key=partition,
                                resources={"config": self.p.config()})
        return {(e.asset_key.path[-1], e.partition): e.materialization
                for e in result.get_asset_materialization_events()}

    def status(self, name: str, partition: str | None = None) -> StaleStatus:
        resolver = CachingStaleStatusResolver(self.instance, self.defs.resolve_asset_graph(),
                                              LoadingContextForTest(self.instance))
        return resolver.get_status(self.p.key(name), partition)

    def causes(self, name: str, partition: str | None = None) -> list[str]:
        resolver = CachingStaleStatusResolver(self.instance, self.defs.resolve_asset_graph(),
                                              LoadingContextForTest(self.instance))
        return [c.reason for c in resolver.get_stale_causes(self.p.key(name), partition)]

    def everything(self) -> dict:
        mats = self.materialize(["face_manifest"])
        for sid in SHARDS:
            mats.update(self.materialize(["face_crops", "teacher_soft_labels"], sid))
        mats.update(self.materialize(["vmage_table"]))
        return mats


def _version(mat: dg.AssetMaterialization) -> str:
    return mat.tags["dagster/data_version"]


def test_versions_follow_faces_settings(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    g = Graph(_params(tmp_path, 112), instance)
    s = g.p.settings
    first = g.everything()
    crops = shard_path(s.crops_dir, SHARDS[0])
    # the data version Dagster records is the version the core stamped into the shard
    assert _version(first[("face_crops", SHARDS[0])]) == stage_version(s, "crops", SHARDS[0])
    assert stage_version(s, "crops", SHARDS[0]).startswith(settings_version(s, "crops") + "+img")  # + its images' hashes
    assert _version(first[("teacher_soft_labels", SHARDS[0])]).startswith(settings_version(s, "crops"))
    assert first[("face_crops", SHARDS[0])].tags["dagster/code_version"] == g.p.code_version("crops")
    for name, part in [("face_manifest", None), ("face_crops", SHARDS[0]), ("teacher_soft_labels", SHARDS[0]),
                       ("vmage_table", None)]:
        assert g.status(name, part) == StaleStatus.FRESH, name
    # the age-group histogram renders in the UI: Markdown with the PNG inline
    histogram = first[("vmage_table", None)].metadata["age_group_histogram"].value
    assert histogram.startswith("![teacher ages by SPEC group](data:image/png;base64,iVBOR")

    # unchanged settings (definitions reloaded too): the stages skip, the versions stay
    mtime = crops.stat().st_mtime_ns
    g = Graph(_params(tmp_path, 112), instance)
    again = g.everything()
    assert crops.stat().st_mtime_ns == mtime
    assert again[("face_crops", SHARDS[0])].metadata["up_to_date"].value is True
    assert again[("teacher_soft_labels", SHARDS[0])].metadata["up_to_date"].value is True
    for key in first:
        assert _version(again[key]) == _version(first[key]), key
    assert g.status("vmage_table") == StaleStatus.FRESH

    # another crop size: face_crops is stale (new code version); its dependants follow once
    # it has a new data version
    g = Graph(_params(tmp_path, 96), instance)
    assert g.p.code_version("crops") != first[("face_crops", SHARDS[0])].tags["dagster/code_version"]
    assert g.p.code_version("label") == first[("teacher_soft_labels", SHARDS[0])].tags["dagster/code_version"]
    assert g.status("face_crops", SHARDS[0]) == StaleStatus.STALE
    assert g.causes("face_crops", SHARDS[0]) == ["has a new code version"]
    assert g.status("face_manifest") == StaleStatus.FRESH
    new = g.materialize(["face_crops"], SHARDS[0])
    assert new[("face_crops", SHARDS[0])].metadata["up_to_date"].value is False
    assert _version(new[("face_crops", SHARDS[0])]) != _version(first[("face_crops", SHARDS[0])])
    assert g.status("face_crops", SHARDS[0]) == StaleStatus.FRESH
    assert g.status("teacher_soft_labels", SHARDS[0]) == StaleStatus.STALE
    assert g.causes("teacher_soft_labels", SHARDS[0]) == ["has a new dependency data version"]
    new.update(g.materialize(["teacher_soft_labels"], SHARDS[0]))
    assert _version(new[("teacher_soft_labels", SHARDS[0])]) != _version(first[("teacher_soft_labels", SHARDS[0])])
    assert g.status("vmage_table") == StaleStatus.STALE
    assert g.status("face_crops", SHARDS[1]) == StaleStatus.STALE               # not re-made yet
    for sid in SHARDS[1:]:
        g.materialize(["face_crops", "teacher_soft_labels"], sid)
    new.update(g.materialize(["vmage_table"]))
    assert _version(new[("vmage_table", None)]) != _version(first[("vmage_table", None)])
    assert g.status("vmage_table") == StaleStatus.FRESH
