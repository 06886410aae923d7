"""The label table's reader: one split of ``<workdir>/vmage.parquet`` joined with its crops.

A low module (``FaceSet``, ``load_split``, ``load_splits``, ``manifest_crops``): students learn
from it, evaluation, LFW+C and fine-tuning read it, and the label-table stage
(``teacher.vmage``) checks it; none of them need the teacher to read it.  ``USABLE`` (the crop
statuses that hold a face) is defined here because every reader filters by it; the crops
stage (``faces.crops``) writes those statuses.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.errors import DataError
from agedistill_core.shards import join_columns, read_shards, read_table, shard_path

if TYPE_CHECKING:
    from agedistill_core.settings import Settings

USABLE = ("ok", "whole_image")  # crop statuses that have a crop
# the other statuses: no_face, unreadable, too_large, too_small, duplicate (no crop, a reason)


def manifest_table(settings: Settings) -> tuple[pa.Table, list[str]]:
    """The manifest's rows (the columns the label table needs) and its shard ids."""
    manifest = read_table(settings.manifest_path, ["image_id", "dataset", "split", "age", "age_group", "shard"])
    return manifest, sorted(pc.unique(manifest["shard"]).to_pylist())


def require_shards(folder, shards: list[str], fix: str) -> None:
    """A one-line ``DataError`` naming the missing shard files of ``folder`` and the command (``fix``) that writes them."""
    missing = [str(shard_path(folder, s)) for s in shards if not shard_path(folder, s).is_file()]
    if missing:
        few = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{few} missing (the manifest has {'this shard' if len(missing) == 1 else 'these shards'}); "
                        f"run {fix} first")


def manifest_crops(settings: Settings, columns: list[str] | None = None) -> pa.Table:
    """The crop rows of the images in the current manifest (only its shards are read;
    rows of images no longer in it, and shard files of other manifests, are ignored)."""
    manifest, shards = manifest_table(settings)
    require_shards(settings.crops_dir, shards, "`agedistill crops`")
    cols = list(dict.fromkeys(["image_id", *(columns or CROP_COLUMNS)]))
    crops = read_shards(settings.crops_dir, cols, shards=shards)
    crops = crops.filter(pc.is_in(crops["image_id"], value_set=manifest["image_id"]))
    return crops.select(columns or CROP_COLUMNS)


CROP_COLUMNS = ["image_id", "face", "status"]


# -- one split of the table, joined with its crops: what students learn and evaluation scores --

@dataclass
class FaceSet:
    """Parallel columns for one split: what a student sees and learns."""
    image_id: list[str]
    jpeg: list[bytes]
    target_age: np.ndarray          # (N,) teacher age or ground truth
    target_probs: np.ndarray | None  # (N, 101) teacher vector (None for ground truth)
    age_spread: np.ndarray          # (N,) teacher disagreement (0 for ground truth)
    teacher_age: np.ndarray         # (N,) the teacher's age (nan where unlabelled)
    gt_age: np.ndarray              # (N,) ground truth (nan where unknown)
    source: list[str] = field(default_factory=list)  # source id per face ([] = unknown)

    def __len__(self) -> int:
        return len(self.jpeg)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return FaceSet([self.image_id[i] for i in idx], [self.jpeg[i] for i in idx], self.target_age[idx],
                       pick(self.target_probs), self.age_spread[idx], self.teacher_age[idx], self.gt_age[idx],
                       [self.source[i] for i in idx] if self.source else [])

    def fingerprint(self) -> str:
        """A short hash of which faces and which targets: a resume is refused when it changes."""
        h = hashlib.sha1()
        for iid in self.image_id:
            h.update(iid.encode("utf-8", "surrogateescape") + b"\0")
        h.update(np.round(np.nan_to_num(self.target_age, nan=-1.0), 3).astype(np.float32).tobytes())
        return h.hexdigest()[:16]


def load_split(settings: Settings, split: str, label_source: str = "teacher",
               sources: tuple[str, ...] | list[str] | None = None) -> FaceSet:
    """Join the label table with the crops for one split (only ``sources``, when given)."""
    return load_splits(settings, (split,), label_source, sources)[split]


def load_splits(settings: Settings, splits: tuple[str, ...] | list[str], label_source: str = "teacher",
                sources: tuple[str, ...] | list[str] | None = None) -> dict[str, FaceSet]:
    """``load_split`` for several splits, reading the crop shards once (training reads train and val)."""
    vmage = read_table(settings.vmage_path, ["image_id", "face", "dataset", "split", "teacher_age", "probs",
                                             "age_spread", "gt_age"])
    vmage = vmage.filter(pc.is_in(vmage["split"], pa.array(list(splits), pa.string())))
    if sources:
        vmage = vmage.filter(pc.is_in(vmage["dataset"], pa.array(list(sources), pa.string())))
    if label_source == "ground_truth":
        vmage = vmage.filter(pc.is_valid(vmage["gt_age"]))
    crops = manifest_crops(settings, ["image_id", "face", "jpeg", "status"])
    crops = crops.filter(pc.is_in(crops["status"], pa.array(USABLE))).drop_columns(["status"])
    joined = join_columns(vmage, crops, ["image_id", "face"], ["jpeg"], how="inner")
    return {split: _face_set(joined.filter(pc.equal(joined["split"], split)).sort_by("image_id"), label_source)
            for split in splits}


def _face_set(table: pa.Table, label_source: str) -> FaceSet:
    probs = np.asarray(table["probs"].combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, 101)
    teacher_age = table["teacher_age"].to_numpy().astype(np.float32)
    gt = table["gt_age"].to_numpy(zero_copy_only=False).astype(np.float32)
    teacher = label_source == "teacher"
    return FaceSet(
        image_id=table["image_id"].to_pylist(),
        jpeg=table["jpeg"].to_pylist(),
        target_age=teacher_age if teacher else gt,
        target_probs=probs if teacher else None,
        age_spread=table["age_spread"].to_numpy().astype(np.float32) if teacher else np.zeros(len(gt), np.float32),
        teacher_age=teacher_age,
        gt_age=gt,
        source=table["dataset"].to_pylist(),
    )
